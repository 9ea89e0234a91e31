"""The rule path of the prompt refiner: a slot model of the picture that each user turn updates.

Always available and the offline default. The whole conversation is replayed on every turn, so the prompt
is rewritten from everything said so far. A turn adds terms, replaces a slot ("换成", "instead",
"make it"), removes and negates ("不要", "without", "no"), names a style preset, or asks for new
variations. Chinese reaches English prompt terms through the term dictionary; English words that no entry
names stay in the prompt as the user wrote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.refiner.result import RefinedTurn
from engine.refiner.terms import SLOTS, TermDictionary, TermEntry, TermMatch, has_cjk

SINGLE_SLOTS = {"scene", "style", "time", "lighting", "camera"}
SLOT_NAMES_ZH = {"subject": "主体", "scene": "场景", "style": "风格", "time": "时间", "lighting": "光线",
                 "colour": "色彩", "composition": "构图", "camera": "镜头", "quality": "画质", "negatives": "负面"}


def _alternation(words: list[str], english: bool) -> re.Pattern:
    ordered = sorted(words, key=len, reverse=True)
    if english:
        return re.compile("|".join(rf"(?<![\w']){re.escape(w)}(?![\w'])" for w in ordered), re.IGNORECASE)
    return re.compile("|".join(re.escape(w) for w in ordered))


# Operation markers, Chinese and English. The earliest marker in a clause decides what the clause does.
MARKERS = {
    "remove": (["不要", "不想要", "去掉", "去除", "删除", "删掉", "移除", "拿掉", "没有", "不需要", "别"],
               ["no", "without", "remove", "get rid of", "take out", "take away", "delete", "don't want",
                "do not want", "lose the", "drop the", "not", "don't show", "leave out"]),
    "replace": (["换成", "改成", "变成", "改为", "换为", "替换成", "替换为", "改用", "换"],
                ["instead of", "instead", "change it to", "change to", "change", "make it", "turn it into",
                 "turn into", "switch to", "replace", "swap", "set it", "make the picture"]),
    "add": (["加上", "添加", "加入", "再加", "增加", "加", "放"],
            ["add", "include", "put", "plus", "also with", "and also"]),
}
MARKER_PATTERNS = {op: (_alternation(zh, False), _alternation(en, True)) for op, (zh, en) in MARKERS.items()}

VARIATIONS = _alternation(["换一批", "再来几张", "再来一批", "重新生成", "换个种子", "换一组", "其他版本", "再生成",
                           "new variations", "more variations", "other variations", "another batch",
                           "different seed", "new seed", "try again", "reroll", "re-roll", "other versions",
                           "regenerate", "new versions", "different versions", "some variations"], english=True)
RESET = _alternation(["重新开始", "重新画", "从头开始", "换个主题", "新的画面", "start over", "start again",
                      "from scratch", "new picture", "something completely different"], english=True)
REFUSE = _alternation(["裸体", "色情", "裸照", "血腥", "虐杀", "nude", "naked", "nsfw", "porn", "pornographic",
                       "gore", "sexual", "explicit"], english=True)
CHAT = _alternation(["谢谢", "多谢", "谢了", "你好", "您好", "好的", "不错", "很好", "太棒了", "挺好", "哈哈", "嗯",
                     "可以了", "你是谁", "你能做什么", "thanks", "thank you", "hello", "hi", "hey", "great", "nice",
                     "cool", "ok", "okay", "looks good", "awesome", "perfect", "love it", "what can you do",
                     "who are you", "good job", "well done", "help"], english=True)

# Words that carry no picture content: commands, quantities, particles.
ZH_FILLER = re.compile(
    r"请|帮我|给我|我想要|我想|我要|想要|画一|画个|画|生成|来一|来个|做一|一只|一个|一张|一幅|一位|一条|一朵|一辆|一座|"
    r"一片|一群|一些|两只|两个|一点|一下|有点|有|让|使|把|的|地|得|在|上|里|中|了|吧|啊|呢|呀|哦|和|与|及|再|也|都|个|只|张|"
    r"是|很|更|点|要|它|这|那|图|画面|图片|照片|背景|换|成|为|一|下"
)
EN_FILLER = re.compile(
    r"(?<![\w'])(please|draw|paint|generate|create|render|show me|show|give me|i want|i'd like|i would like|"
    r"can you|could you|let's|lets|a picture of|an image of|a photo of|picture of|image of|photo of|make|it|me|"
    r"also|now|just|the picture|the image|there|some more|more|a bit|slightly|very|too|style|look|version|again|"
    r"actually|back)(?![\w'])",
    re.IGNORECASE,
)
EDGE_STOPWORDS = {"a", "an", "the", "on", "in", "at", "with", "of", "and", "to", "for", "by", "from", "into",
                  "some", "is", "be", "are", "that", "this", "so", "but", "or", "as", "its", "their", "his", "her"}
LEADING_STOPWORDS = EDGE_STOPWORDS - {"a", "an", "the", "some", "his", "her", "their", "its"}
CLAUSE_SPLIT = re.compile(r"[,，。.;；!！?？\n]+|(?:\s+and\s+|\s*然后|\s*并且|\s*同时)(?=\s*(?:"
                          + "|".join(re.escape(w) for op in MARKERS.values() for w in op[1] + op[0]) + "))",
                          re.IGNORECASE)
ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
# English free text in a later turn counts as something to add only when it reads like a thing.
THING = re.compile(r"^(a|an|the|some|two|three|four|five|several|many|few|one|another)\s", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9'-]+", text.lower())


def _clean_english(text: str) -> str:
    """Leftover English without commands and with no dangling articles or prepositions at its edges."""
    text = EN_FILLER.sub(" ", text)
    words = re.sub(r"[^\w\s'-]", " ", text).split()
    while words and words[-1].lower() in EDGE_STOPWORDS:
        words.pop()
    while words and words[0].lower() in LEADING_STOPWORDS:
        words.pop(0)
    if words and all(w.lower() in EDGE_STOPWORDS for w in words):
        return ""
    return " ".join(words)


def _clean_chinese(text: str) -> str:
    runs = re.findall(r"[\u3400-\u9fff]+", ZH_FILLER.sub(" ", text))
    return "".join(r for r in runs if len(r) >= 2)


def _with_adjective(adjective: str, subject_terms: str) -> str:
    noun = ARTICLE.sub("", subject_terms)
    if ARTICLE.match(subject_terms) and not subject_terms.lower().startswith("the "):
        return f"{'an' if adjective[:1].lower() in 'aeiou' else 'a'} {adjective} {noun}"
    return f"{adjective} {noun}"


def _mentions(term: str, key: str) -> bool:
    """Whether a slot term is about ``key`` (a word or phrase), on word boundaries."""
    key = ARTICLE.sub("", key.strip().lower())
    return bool(key) and re.search(rf"(?<![\w']){re.escape(key)}(?![\w'])", term.lower()) is not None


@dataclass
class PictureState:
    """The picture as slots of (English term, the user's own words) items, negatives and a style preset."""

    slots: dict[str, list[dict]] = field(default_factory=lambda: {s: [] for s in SLOTS})  # slot -> [{term, source}]
    negatives: list[dict] = field(default_factory=list)
    style: str | None = None

    def to_dict(self) -> dict:
        return {"slots": self.slots, "negatives": self.negatives, "style": self.style}

    @property
    def empty(self) -> bool:
        return not any(self.slots.values())

    def snapshot(self) -> tuple:
        return (repr(self.slots), repr(self.negatives), self.style)

    def add(self, slot: str, term: str, source: str, preset: str | None = None) -> None:
        if slot in SINGLE_SLOTS:
            self.clear(slot)
        items = self.slots[slot]
        if not any(i["term"] == term and i["source"] == source for i in items):
            items.append({"term": term, "source": source, **({"preset": preset} if preset else {})})
        if slot == "style":
            self.style = preset
        # Asking for a thing again takes it out of the negatives.
        self.negatives = [n for n in self.negatives
                          if not (term and (_mentions(term, n["term"]) or _mentions(n["term"], term)))
                          and n["source"] != source]

    def reset(self) -> None:
        """Start over: a new picture from nothing."""
        self.slots, self.negatives, self.style = {s: [] for s in SLOTS}, [], None

    def clear(self, slot: str) -> None:
        self.slots[slot] = []
        if slot == "style":
            self.style = None

    def remove(self, key: str, source: str, slot: str | None = None) -> list[str]:
        """Drop the items about ``key`` (a term, a noun, or the user's own words); return the removed terms."""
        removed = []
        for name in [slot] if slot else SLOTS:
            keep = []
            for item in self.slots[name]:
                about = (item["term"] and _mentions(item["term"], key)) or item["source"] == source or (
                    has_cjk(source) and source in item["source"])
                (removed if about else keep).append(item)
            self.slots[name] = keep
            if name == "style" and not keep:
                self.style = None
        return [i["term"] or i["source"] for i in removed]

    def unnegate(self, entry: TermEntry) -> None:
        """Asking for a named thing again ("add the people again") takes it out of the negatives."""
        self.negatives = [n for n in self.negatives if n["term"] not in (entry.negative_terms, entry.terms)]

    def negate(self, terms: str, source: str) -> None:
        if not any(n["term"] == terms for n in self.negatives):
            self.negatives.append({"term": terms, "source": source})

    def prompt(self) -> str:
        terms = [i["term"] for slot in SLOTS for i in self.slots[slot] if i["term"] and "preset" not in i]
        return ", ".join(_dedupe(terms))

    def prompt_original(self, language: str) -> str:
        if language != "zh":
            return self.prompt()
        parts = [i["source"] if has_cjk(i["source"]) else i["term"]
                 for slot in SLOTS for i in self.slots[slot] if "preset" not in i]
        return "，".join(_dedupe([p for p in parts if p]))

    def negative_prompt(self) -> str:
        return ", ".join(_dedupe([n["term"] for n in self.negatives]))


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass
class TurnEffect:
    mapping: list[dict] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    chat: bool = False
    refuse: bool = False
    new_seed: bool = False
    reset: bool = False
    changed: bool = False


class RuleRefiner:
    def __init__(self, terms: TermDictionary, styles: dict):
        self.terms = terms
        self.styles = styles  # name -> engine.styles.Style, for tweaks that pick a preset

    # One clause ---------------------------------------------------------------------------------------

    def _entries_in(self, text: str) -> list[TermMatch]:
        """Dictionary matches, with a Chinese colour adjective merged into the subject noun after it."""
        matches = self.terms.match(text)
        merged: list[TermMatch] = []
        for m in matches:
            prev = merged[-1] if merged else None
            if (prev is not None and prev.entry.adjective and m.entry.slot == "subject"
                    and text[prev.end:m.start].strip() in ("", "的")):
                entry = TermEntry(slot="subject", terms=_with_adjective(prev.entry.terms, m.entry.terms),
                                  negative=m.entry.negative_terms)
                merged[-1] = TermMatch(prev.start, m.end, text[prev.start:m.end], entry)
            else:
                merged.append(m)
        return merged

    def _leftover(self, text: str, matches: list[TermMatch]) -> str:
        for m in sorted(matches, key=lambda m: m.start, reverse=True):
            text = text[:m.start] + " , " + text[m.end:]
        if has_cjk(text):
            return _clean_chinese(text)
        # Matched phrases leave a break, so leftovers on either side of one do not run together.
        pieces = [_clean_english(p) for p in text.split(",")]
        return ", ".join(p for p in pieces if p)

    def _add(self, state: PictureState, effect: TurnEffect, segment: str, action: str, free_text: str) -> bool:
        """Put the segment's terms in their slots. ``free_text`` says whether words no entry names become
        part of the subject: "always", "never", or "auto" (when they read like a thing, or sit beside known
        terms in a Chinese description)."""
        matches = self._entries_in(segment)
        if not has_cjk(segment):  # English subjects stay as the user wrote them, as free text
            for m in matches:
                if m.entry.slot == "subject":
                    state.unnegate(m.entry)
            matches = [m for m in matches if m.entry.slot != "subject"]
        replaced: set[str] = set()
        for m in matches:
            if action == "replace" and m.entry.slot not in replaced and m.entry.slot not in SINGLE_SLOTS:
                # "换成暖色调": a replacement clears a many-valued slot once, then fills it.
                if m.entry.slot != "subject":
                    state.clear(m.entry.slot)
                replaced.add(m.entry.slot)
            state.add(m.entry.slot, m.entry.terms, m.phrase, m.entry.preset)
            effect.mapping.append({"from": m.phrase, "to": m.entry.terms, "slot": m.entry.slot, "action": action})
        leftover = self._leftover(segment, matches)
        if free_text == "auto":
            free_text = "always" if (THING.match(leftover) or (has_cjk(leftover) and matches)) else "never"
        if leftover and free_text == "always":
            state.add("subject", "" if has_cjk(leftover) else leftover, leftover)
            if has_cjk(leftover):
                effect.unmapped.append(leftover)
            else:
                effect.mapping.append({"from": leftover, "to": leftover, "slot": "subject", "action": action})
        elif leftover:
            effect.unmapped.append(leftover)
        return bool(matches) or bool(leftover and free_text == "always")

    def _remove(self, state: PictureState, effect: TurnEffect, segment: str, negate: bool) -> bool:
        matches = self._entries_in(segment)
        for m in matches:
            key = m.entry.terms if m.entry.slot != "subject" else ARTICLE.sub("", m.entry.terms)
            removed = state.remove(key, m.phrase, slot=m.entry.slot)
            for en in m.entry.en:  # "no people" also removes "a crowd of people" written as free text
                removed += state.remove(en, m.phrase, slot="subject")
            if negate:
                state.negate(m.entry.negative_terms, m.phrase)
            effect.mapping.append({"from": m.phrase, "to": m.entry.negative_terms if negate else ", ".join(removed) or m.entry.terms,
                                   "slot": "negatives" if negate else m.entry.slot, "action": "remove"})
        leftover = self._leftover(segment, matches)
        if leftover:
            if has_cjk(leftover):
                removed = state.remove(leftover, leftover)
                if not removed:
                    effect.unmapped.append(leftover)
                else:
                    effect.mapping.append({"from": leftover, "to": None, "slot": "subject", "action": "remove"})
            else:
                removed = [t for word in [leftover, *leftover.split()[-1:]] for t in state.remove(word, leftover)]
                if negate:
                    state.negate(ARTICLE.sub("", leftover), leftover)
                effect.mapping.append({"from": leftover, "to": ARTICLE.sub("", leftover) if negate else ", ".join(removed),
                                       "slot": "negatives" if negate else "subject", "action": "remove"})
        return bool(matches or leftover)

    def _clause(self, state: PictureState, effect: TurnEffect, clause: str, first_picture: bool) -> None:
        found = []
        for op, (zh, en) in MARKER_PATTERNS.items():
            for pattern in (zh, en):
                m = pattern.search(clause)
                if m:
                    found.append((m.start(), -len(m.group(0)), op, m))
        if not found:
            if not re.sub(r"[\W_]+", "", CHAT.sub("", clause)):
                effect.chat = True
            else:
                self._add(state, effect, clause, "add", free_text="always" if first_picture else "auto")
            return
        _, _, op, marker = min(found)
        before, after = clause[:marker.start()], clause[marker.end():]
        word = marker.group(0).lower()
        if op == "remove":
            target = after if after.strip() else before
            self._remove(state, effect, target, negate=True)
            if after.strip() and before.strip():
                self._add(state, effect, before, "add", free_text="auto")
        elif op == "add":
            self._add(state, effect, before + " , " + after, "add", free_text="always")
        else:
            if word == "instead of":  # "a dog instead of the cat"
                new, old = before, after
            elif word == "instead":  # "use a dog instead"
                new, old = before, ""
            else:
                new, old = after, before
                # "replace the cat with a dog", "change the sky to sunset", "把猫换成狗"
                split = re.split(r"\s+(?:with|to|into|by)\s+", after, maxsplit=1, flags=re.IGNORECASE)
                if len(split) == 2 and word in ("replace", "swap", "change"):
                    old, new = split[0], split[1]
            if old.strip():
                self._remove(state, effect, old, negate=False)
            # "make it louder": a replacement with no known term and nothing replaced changes nothing.
            self._add(state, effect, new, "replace", free_text="always" if old.strip() or first_picture else "never")

    # One turn -----------------------------------------------------------------------------------------

    def apply_text(self, state: PictureState, text: str) -> TurnEffect:
        effect = TurnEffect()
        if REFUSE.search(text):
            effect.refuse = True
            return effect
        if RESET.search(text):
            state.reset()
            effect.reset = effect.new_seed = True
            text = RESET.sub(" ", text)
        if VARIATIONS.search(text):
            effect.new_seed = True
            text = VARIATIONS.sub(" ", text)
        first_picture = state.empty
        for clause in CLAUSE_SPLIT.split(text):
            if clause and clause.strip():
                self._clause(state, effect, clause.strip(), first_picture)
        return effect

    def apply_tweak(self, state: PictureState, tweak: dict) -> TurnEffect:
        """A per-image tweak from the UI; only a style choice changes the picture's words."""
        effect = TurnEffect(new_seed=tweak.get("kind") == "variations")
        name = tweak.get("style")
        if tweak.get("kind") == "style" and name in self.styles:
            state.clear("style")
            if name != "none":
                label = self.styles[name].label
                state.add("style", label.lower(), label, preset=name)
            effect.mapping.append({"from": self.styles[name].label, "to": name, "slot": "style", "action": "replace"})
        return effect

    def refine(self, turns: list[dict]) -> RefinedTurn:
        """Replay the conversation (``{"text": ...}`` or ``{"tweak": {...}}`` per turn) and describe its last turn."""
        state = PictureState()
        effect = TurnEffect()
        had_picture = False
        for turn in turns:
            had_picture = had_picture or not state.empty
            before = state.snapshot()
            effect = self.apply_tweak(state, turn["tweak"]) if turn.get("tweak") else self.apply_text(state, turn.get("text", ""))
            effect.changed = state.snapshot() != before
        changed = effect.changed
        texts = [t.get("text", "") for t in turns if not t.get("tweak")]  # tweak labels are bilingual
        language = "zh" if texts and has_cjk(texts[-1]) else "en"
        if effect.refuse:
            intent = "refuse"
        elif changed or effect.new_seed or (turns and turns[-1].get("tweak")):
            intent = "edit" if had_picture and not effect.reset else "draw"
        else:
            intent = "chat"
        if state.empty and intent in ("draw", "edit"):
            intent = "chat"
        conversation_language = "zh" if any(has_cjk(t) for t in texts) else "en"
        return RefinedTurn(
            intent=intent, prompt=state.prompt(), prompt_original=state.prompt_original(conversation_language),
            negative_prompt=state.negative_prompt(), reply=_reply(intent, effect, language, state.empty),
            language=language, mapping=effect.mapping + [
                {"from": u, "to": None, "slot": None, "action": "unmapped"} for u in effect.unmapped],
            slots=state.to_dict(), style=state.style, new_seed=effect.new_seed, source="rules",
        )


def _reply(intent: str, effect: TurnEffect, language: str, empty: bool) -> str:
    zh = language == "zh"
    if intent == "refuse":
        return "这个画面我不能生成。换个主题试试？" if zh else "I can't make that picture. Try another subject?"
    if intent == "chat":
        if effect.unmapped:
            words = "、".join(effect.unmapped) if zh else ", ".join(f"'{u}'" for u in effect.unmapped)
            return (f"我没能把“{words}”对应到画面上，画面保持不变。可以说说时间、风格、光线，或者要加上/去掉什么。" if zh else
                    f"I couldn't map {words} onto the picture, so I kept it as it was. Try the time of day, a style, "
                    "the lighting, or what to add or remove.")
        if effect.chat and not empty:
            return ("不客气！想怎么改，直接告诉我。" if zh else "Glad you like it! Tell me what to change next.")
        return ("说说你想要的画面吧，比如“黄昏时海边的一只猫，水彩风格”。" if zh else
                "Describe the picture you want, e.g. 'a cat on a beach at dusk, watercolour style'.")
    changes = []
    for item in effect.mapping:
        target = item["to"] or item["from"]
        if item["action"] == "remove":
            changes.append(f"去掉 {item['from']}" if zh else f"removed {item['from']}")
        else:
            slot = SLOT_NAMES_ZH.get(item["slot"], item["slot"]) if zh else item["slot"]
            changes.append(f"{slot}：{item['from']} → {target}" if zh else f"{slot}: {item['from']} → {target}")
    if effect.new_seed and not changes:
        return "好的，同样的描述，换一批新的随机种子。" if zh else "Same description, new variations with new seeds."
    head = ("新画面：" if intent == "draw" else "已修改：") if zh else ("New picture: " if intent == "draw" else "Updated: ")
    tail = ""
    if effect.unmapped:
        tail = ("（未能对应：" + "、".join(effect.unmapped) + "）") if zh else (" (not mapped: " + ", ".join(effect.unmapped) + ")")
    return head + ("；".join(changes) if zh else "; ".join(changes)) + tail
