"""Checking refinement against a dialogue test set (``tests/data/refine_dialogues.json``).

A dialogue lists, for its last turn, the substrings each slot must hold (``expect``) and must not hold
(``absent``), and optionally the style preset and whether new variations were asked for.
"""

from __future__ import annotations

from engine.refiner.result import RefinedTurn


def slot_text(slots: dict, name: str) -> str:
    """A slot's English terms (or the negatives'), joined and lower-cased for substring checks."""
    items = slots.get("negatives", []) if name == "negatives" else slots.get("slots", {}).get(name, [])
    return " | ".join(i["term"] for i in items).lower()


def dialogue_failures(result: RefinedTurn, dialogue: dict) -> list[str]:
    """What the refinement of the dialogue's last turn got wrong (empty when it is right)."""
    failures = []
    for slot, words in dialogue.get("expect", {}).items():
        have = slot_text(result.slots, slot)
        failures += [f"{slot} lacks {w!r} (has {have!r})" for w in words if w.lower() not in have]
    for slot, words in dialogue.get("absent", {}).items():
        have = slot_text(result.slots, slot)
        failures += [f"{slot} still has {w!r} (has {have!r})" for w in words if w.lower() in have]
    if "style_preset" in dialogue and result.style != dialogue["style_preset"]:
        failures.append(f"style preset is {result.style!r}, expected {dialogue['style_preset']!r}")
    if "new_seed" in dialogue and result.new_seed != dialogue["new_seed"]:
        failures.append(f"new_seed is {result.new_seed}, expected {dialogue['new_seed']}")
    return failures
