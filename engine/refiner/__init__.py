"""The prompt refiner: a conversation in, one refined turn out (intent, English prompt, mapping, reply).

The LLM path runs when the profile has an instruct model; the rule path is always there and takes over,
visibly, whenever the model's answer cannot be used.
"""

from __future__ import annotations

import logging
from typing import Callable

from engine.refiner.llm import LlmAnswerError, build_messages, parse_answer
from engine.refiner.result import RefinedTurn
from engine.refiner.rules import RuleRefiner
from engine.refiner.terms import TermDictionary, has_cjk

__all__ = ["RefinedTurn", "RuleRefiner", "TermDictionary", "refine_turn"]

log = logging.getLogger(__name__)
MAX_TURN_CHARS = 1000  # longer turns are read up to here; the reply says so


def refine_turn(turns: list[dict], rules: RuleRefiner, ask_llm: Callable[[list[dict]], str] | None = None,
                native_language: bool = False) -> RefinedTurn:
    """Refine the last of ``turns`` (``{"text"|"tweak", "answer"}`` dicts, oldest first).

    ``ask_llm`` maps chat messages to the model's raw answer; without it the rules answer directly.
    """
    cut = len(turns[-1].get("text", "")) > MAX_TURN_CHARS
    turns = [dict(t, text=t.get("text", "")[:MAX_TURN_CHARS]) for t in turns]
    ruled = _note_cut(rules.refine(turns), cut)
    if ask_llm is None or turns[-1].get("tweak"):
        return ruled
    style_names = list(rules.styles)
    language = "zh" if has_cjk(turns[-1]["text"]) else "en"
    try:
        answer = parse_answer(ask_llm(build_messages(turns, style_names)), native_language, style_names, language)
    except LlmAnswerError as exc:
        log.info("LLM answer not used: %s", exc)
        ruled.fallback = str(exc)
        return ruled
    answer.slots = ruled.slots  # kept for the turn's details; the model's prompt is what is drawn
    return _note_cut(answer, cut)


def _note_cut(turn: RefinedTurn, cut: bool) -> RefinedTurn:
    if cut:
        turn.reply += (f"（消息太长，我只读了前 {MAX_TURN_CHARS} 个字。）" if turn.language == "zh" else
                       f" (Your message was long; I read its first {MAX_TURN_CHARS} characters.)")
    return turn
