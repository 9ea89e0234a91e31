"""What one turn of refinement produces, whichever path made it. Plain JSON-ready values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

INTENTS = ("draw", "edit", "chat", "refuse")


@dataclass
class RefinedTurn:
    intent: str
    prompt: str  # the full rewritten English prompt
    prompt_original: str  # the same picture in the user's language
    negative_prompt: str
    reply: str
    language: str  # "zh" or "en": the language the user wrote this turn in
    # Which of the user's phrases became which prompt terms:
    # {"from": phrase, "to": terms or None when unmapped, "slot": slot, "action": add|replace|remove|unmapped}
    mapping: list[dict] = field(default_factory=list)
    slots: dict = field(default_factory=dict)  # the rule path's picture state after this turn
    style: str | None = None  # a style preset the conversation asked for
    new_seed: bool = False  # the user asked for new variations
    source: str = "rules"  # "rules" or "llm"
    fallback: str | None = None  # why the LLM answer was not used, when it was not

    @property
    def makes_images(self) -> bool:
        return self.intent in ("draw", "edit") and bool(self.prompt.strip() or self.prompt_original.strip())

    def to_dict(self) -> dict:
        return asdict(self)

    def history_answer(self) -> dict:
        """What an earlier turn became, as the LLM reads it in the conversation."""
        return {"intent": self.intent, "prompt": self.prompt, "negative_prompt": self.negative_prompt, "style": self.style}

    @classmethod
    def from_dict(cls, data: dict) -> "RefinedTurn":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
