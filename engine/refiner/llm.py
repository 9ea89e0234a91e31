"""The LLM path of the prompt refiner: the profile's instruct model reads the conversation and answers JSON.

The answer is validated against a schema (pydantic). Anything else (not JSON, cut off, off-schema, a prompt
in the wrong language) raises ``LlmAnswerError`` with a reason, and the caller falls back to the rules.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from engine.refiner.result import RefinedTurn
from engine.refiner.terms import has_cjk

SYSTEM_PROMPT = """You are the prompt writer of an image studio. The user describes a picture over several \
turns, in Chinese or English. Judge the intent of the last message:
- "draw": a new picture; "edit": change the last picture; "chat": no picture change (thanks, questions, \
or an instruction that makes no sense for a picture); "refuse": sexual, hateful or violent content.
Rewrite the WHOLE prompt from the conversation so far, keeping everything the user still wants.
Answer with one JSON object and nothing else:
{"intent": "draw|edit|chat|refuse",
 "prompt": "the full English prompt, comma-separated terms",
 "prompt_original": "the same prompt in the user's language",
 "negative_prompt": "things the user does not want, in English",
 "mapping": [{"from": "the user's phrase", "to": "the English prompt terms"}],
 "style": "one of the style presets or null",
 "new_seed": false,
 "reply": "one short sentence to the user, in the user's language"}
Set "new_seed" to true only when the user asks for new variations. Style presets: {styles}."""


class MappingItem(BaseModel):
    from_: str = Field(alias="from", min_length=1)
    to: str | None = None


class LlmAnswer(BaseModel):
    intent: Literal["draw", "edit", "chat", "refuse"]
    prompt: str = ""
    prompt_original: str = ""
    negative_prompt: str = ""
    mapping: list[MappingItem] = Field(default_factory=list)
    style: str | None = None
    new_seed: bool = False
    reply: str = Field(min_length=1)


class LlmAnswerError(ValueError):
    """The model's answer cannot be used; the message says why (shown in the turn's details)."""


def build_messages(turns: list[dict], style_names: list[str]) -> list[dict]:
    """Chat messages for the model: the system prompt, each earlier turn and what it became, the new turn."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT.replace("{styles}", ", ".join(style_names))}]
    for turn in turns:
        if turn.get("tweak"):
            tweak = turn["tweak"]
            text = f"Use the style preset {tweak['style']}." if tweak.get("kind") == "style" else f"({tweak.get('kind')} of the picture)"
        else:
            text = turn.get("text", "")
        messages.append({"role": "user", "content": text})
        if turn.get("answer"):
            messages.append({"role": "assistant", "content": json.dumps(turn["answer"], ensure_ascii=False)})
    return messages


def _json_object(text: str) -> dict:
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        raise LlmAnswerError("the model's answer is not JSON")
    body = body[min(starts):]
    try:
        value, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        if not body.rstrip().endswith(("}", "]")):
            raise LlmAnswerError("the model's answer was cut off before the JSON ended") from None
        raise LlmAnswerError(f"the model's answer is malformed JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise LlmAnswerError("the model's answer is JSON but not an object")
    return value


def parse_answer(text: str, native_language: bool, style_names: list[str], language: str) -> RefinedTurn:
    """Validate a model answer; ``native_language`` profiles may take a Chinese prompt as it is."""
    try:
        answer = LlmAnswer.model_validate(_json_object(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "answer"
        raise LlmAnswerError(f"the model's answer does not fit the schema ({field}: {first['msg']})") from None
    if answer.intent in ("draw", "edit"):
        if not answer.prompt.strip():
            raise LlmAnswerError("the model asked for a picture but wrote no prompt")
        if has_cjk(answer.prompt) and not native_language:
            raise LlmAnswerError("the model wrote the prompt in Chinese, but this profile's models read English")
    style = answer.style if answer.style in style_names and answer.style != "none" else None
    return RefinedTurn(
        intent=answer.intent, prompt=answer.prompt.strip(), prompt_original=answer.prompt_original.strip() or answer.prompt.strip(),
        negative_prompt=answer.negative_prompt.strip(), reply=answer.reply.strip(), language=language,
        mapping=[{"from": m.from_, "to": m.to, "slot": None, "action": "map"} for m in answer.mapping],
        style=style, new_seed=answer.new_seed, source="llm",
    )


def ask(model, tokenizer, messages: list[dict], max_new_tokens: int = 384) -> str:
    """Greedy generation with the chat template; returns the new text only."""
    import torch

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
