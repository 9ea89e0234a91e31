"""The bilingual term dictionary (``templates/prompt_terms.json``): user phrases to English prompt terms.

Chinese is matched as substrings and English on word boundaries, longest phrase first, so "机器人" wins
over any shorter entry inside it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TERMS_FILE = Path(__file__).resolve().parents[2] / "templates" / "prompt_terms.json"
SLOTS = ("subject", "scene", "style", "time", "lighting", "colour", "composition", "camera", "quality")
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class TermEntry:
    slot: str
    terms: str
    zh: tuple[str, ...] = ()
    en: tuple[str, ...] = ()
    negative: str | None = None
    preset: str | None = None
    adjective: bool = False

    @property
    def negative_terms(self) -> str:
        return self.negative or self.terms


@dataclass(frozen=True)
class TermMatch:
    start: int
    end: int
    phrase: str
    entry: TermEntry


def has_cjk(text: str) -> bool:
    return bool(CJK.search(text))


class TermDictionary:
    def __init__(self, entries: list[TermEntry]):
        self.entries = entries
        self._phrases: dict[str, TermEntry] = {}
        for entry in entries:
            if entry.slot not in SLOTS:
                raise ValueError(f"term {entry.terms!r} names an unknown slot {entry.slot!r}")
            for phrase in (*entry.zh, *(p.lower() for p in entry.en)):
                if phrase in self._phrases and self._phrases[phrase] is not entry:
                    raise ValueError(f"phrase {phrase!r} appears in two entries")
                self._phrases[phrase] = entry
        ordered = sorted(self._phrases, key=len, reverse=True)
        # One alternation, longest first; English phrases must sit on word boundaries.
        parts = [re.escape(p) if has_cjk(p) else rf"(?<![\w']){re.escape(p)}(?![\w'])" for p in ordered]
        self._pattern = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    @classmethod
    def load(cls, path: str | Path | None = None) -> "TermDictionary":
        raw = json.loads(Path(path or DEFAULT_TERMS_FILE).read_text(encoding="utf-8"))
        return cls([
            TermEntry(slot=e["slot"], terms=e["terms"], zh=tuple(e.get("zh", ())), en=tuple(e.get("en", ())),
                      negative=e.get("negative"), preset=e.get("preset"), adjective=bool(e.get("adjective")))
            for e in raw["entries"]
        ])

    def match(self, text: str) -> list[TermMatch]:
        if self._pattern is None:
            return []
        return [TermMatch(m.start(), m.end(), m.group(0), self._phrases[m.group(0).lower()])
                for m in self._pattern.finditer(text)]

    def lookup(self, phrase: str) -> TermEntry | None:
        return self._phrases.get(phrase.lower())
