"""The prompt refiner: the rule path over the dialogue set, the LLM answer parser, and the fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.refiner import RuleRefiner, TermDictionary, refine_turn
from engine.refiner.evaluation import dialogue_failures
from engine.refiner.llm import LlmAnswerError, build_messages, parse_answer
from engine.refiner.terms import DEFAULT_TERMS_FILE, SLOTS
from engine.styles import load_styles

DATA = Path(__file__).resolve().parents[1] / "data"
DIALOGUES = json.loads((DATA / "refine_dialogues.json").read_text(encoding="utf-8"))
ANSWERS = json.loads((DATA / "llm_answers.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rules() -> RuleRefiner:
    return RuleRefiner(TermDictionary.load(), load_styles())


def test_the_dictionary_is_large_bilingual_and_covers_every_slot():
    raw = json.loads(DEFAULT_TERMS_FILE.read_text(encoding="utf-8"))["entries"]
    terms = TermDictionary.load()  # raises on duplicated phrases or unknown slots
    assert len(raw) >= 400
    assert {e["slot"] for e in raw} == set(SLOTS)
    assert sum(len(e.get("zh", [])) for e in raw) >= 400
    styles = load_styles()
    assert {e["preset"] for e in raw if e.get("preset")} <= set(styles)
    assert terms.lookup("黄昏").slot == "time"


def test_the_dialogue_set_is_large_and_half_chinese():
    assert len(DIALOGUES) >= 40
    chinese = [d for d in DIALOGUES if d["language"] == "zh"]
    assert 0.4 <= len(chinese) / len(DIALOGUES) <= 0.6
    assert all(3 <= len(d["turns"]) <= 6 for d in DIALOGUES)


@pytest.mark.parametrize("dialogue", DIALOGUES, ids=[d["id"] for d in DIALOGUES])
def test_rule_path_over_the_dialogue_set(rules, dialogue):
    result = refine_turn([{"text": t} for t in dialogue["turns"]], rules)
    assert dialogue_failures(result, dialogue) == []


def test_a_later_turn_rewrites_the_whole_prompt_and_maps_its_words(rules):
    turns = [{"text": "画一只猫坐在窗台上"}, {"text": "改成黄昏"}]
    result = refine_turn(turns, rules)
    assert result.intent == "edit" and result.language == "zh"
    assert "cat" in result.prompt and "dusk" in result.prompt
    assert {"from": "黄昏", "slot": "time", "action": "replace"}.items() <= result.mapping[0].items()
    assert "黄昏" in result.prompt_original


def test_negation_moves_words_to_the_negative_prompt_and_back(rules):
    removed = refine_turn([{"text": "a street with people at night"}, {"text": "no people"}], rules)
    assert "people" in removed.negative_prompt and "people" not in removed.prompt
    again = refine_turn([{"text": "a street with people at night"}, {"text": "no people"}, {"text": "add some people"}], rules)
    assert "people" not in again.negative_prompt and "people" in again.prompt


@pytest.mark.parametrize("text, reply_has", [
    ("make it louder", "couldn't map"), ("把声音调大", "没能"), ("thanks, looks good", "Glad"), ("谢谢", "不客气"),
])
def test_turns_that_do_not_change_the_picture_get_a_reply_and_no_images(rules, text, reply_has):
    result = refine_turn([{"text": "a lighthouse on a cliff"}, {"text": text}], rules)
    assert result.intent == "chat" and not result.makes_images
    assert reply_has in result.reply
    assert "lighthouse" in result.prompt  # the picture is kept for the next turn


def test_asking_for_variations_keeps_the_words_and_asks_for_new_seeds(rules):
    first = refine_turn([{"text": "a lighthouse on a cliff"}], rules)
    more = refine_turn([{"text": "a lighthouse on a cliff"}, {"text": "换一批"}], rules)
    assert more.new_seed and more.makes_images and more.prompt == first.prompt
    assert not first.new_seed


def test_a_harmful_request_is_refused(rules):
    result = refine_turn([{"text": "a nude portrait"}], rules)
    assert result.intent == "refuse" and not result.makes_images


def test_a_five_thousand_character_turn_is_read_in_part_and_said_so(rules):
    text = "a castle on a hill at dusk " * 200
    result = refine_turn([{"text": text[:5000]}], rules)
    assert result.makes_images and "castle" in result.prompt
    assert "first 1000 characters" in result.reply


def test_a_style_tweak_sets_the_preset_for_later_turns(rules):
    turns = [{"text": "a fox in snow"}, {"tweak": {"kind": "style", "style": "ink-wash", "asset_id": "x"}},
             {"text": "make it night"}]
    result = refine_turn(turns, rules)
    assert result.style == "ink-wash" and "night" in result.prompt


@pytest.mark.parametrize("case", ANSWERS, ids=[a["id"] for a in ANSWERS])
def test_recorded_llm_answers(case):
    styles = list(load_styles())
    if case["expect"] == "llm":
        turn = parse_answer(case["answer"], native_language=False, style_names=styles, language=case["language"])
        assert turn.source == "llm" and turn.intent == case["intent"] and turn.reply
        if "style" in case:
            assert turn.style == case["style"]
        if "new_seed" in case:
            assert turn.new_seed is case["new_seed"]
    else:
        with pytest.raises(LlmAnswerError, match=case["reason"]):
            parse_answer(case["answer"], native_language=False, style_names=styles, language=case["language"])


def test_a_chinese_prompt_is_accepted_by_a_profile_that_reads_chinese():
    case = next(a for a in ANSWERS if a["id"] == "wrong-language")
    turn = parse_answer(case["answer"], native_language=True, style_names=["none"], language="zh")
    assert turn.prompt == "窗台上的猫，黄昏"


def test_an_unusable_llm_answer_falls_back_to_the_rules_visibly(rules):
    truncated = next(a for a in ANSWERS if a["id"] == "truncated")["answer"]
    result = refine_turn([{"text": "a cat on a windowsill"}, {"text": "make it dusk"}], rules, ask_llm=lambda m: truncated)
    assert result.source == "rules" and "cut off" in result.fallback
    assert "dusk" in result.prompt and result.makes_images


def test_a_valid_llm_answer_is_used_and_sees_the_conversation(rules):
    seen = {}
    valid = next(a for a in ANSWERS if a["id"] == "valid-en")["answer"]

    def ask(messages):
        seen["messages"] = messages
        return valid

    history = [{"text": "a cat", "answer": {"intent": "draw", "prompt": "a cat"}}, {"text": "make it dusk"}]
    result = refine_turn(history, rules, ask_llm=ask)
    assert result.source == "llm" and result.fallback is None and result.style == "watercolor"
    roles = [m["role"] for m in seen["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "JSON" in seen["messages"][0]["content"]


def test_build_messages_describes_tweaks_in_words():
    messages = build_messages([{"text": "a cat"}, {"tweak": {"kind": "style", "style": "anime"}}], ["anime"])
    assert messages[-1]["content"] == "Use the style preset anime."


def test_an_llm_refusal_is_answered_and_the_conversation_goes_on(rules):
    refusal = next(a for a in ANSWERS if a["id"] == "refusal")["answer"]
    turns = [{"text": "a knight on a horse"}, {"text": "make it explicit"}]
    refused = refine_turn(turns, rules, ask_llm=lambda m: refusal)
    assert refused.intent == "refuse" and refused.source == "llm" and not refused.makes_images
    assert refused.reply == "I can't make that picture."
    turns += [{"text": "make it dusk"}]
    after = refine_turn(turns, rules, ask_llm=lambda m: "not json")
    assert after.makes_images and "knight" in after.prompt and "dusk" in after.prompt
