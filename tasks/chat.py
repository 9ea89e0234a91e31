"""The chat-turn task: refine the conversation's prompt, then draw, score and rank the candidates.

Refinement runs here, not in the web process. Idempotent: a redelivered turn reuses its stored refinement
and seed, and stores only the images it lacks.
"""

from __future__ import annotations

import dataclasses
import random

from engine.loader import ModelUnavailableError
from engine.params import MAX_PROMPT_CHARS, MAX_SEED, image_seed, resolve_generation, size_for_aspect
from engine.profiles import STAGE_SCALE, Profile
from engine.refiner import RefinedTurn, refine_turn
from engine.refiner.llm import LlmAnswerError, ask
from engine.rerank import ranked
from engine.styles import Style
from storage import conversations, repo
from storage.models import Turn
from tasks.celery_app import CHAT_TURN, app
from tasks.generate import JobError, JobReporter, execute, generate_images, job_profile
from tasks.worker import WorkerContext


def _history(path: list[Turn]) -> list[dict]:
    """The conversation as the refiner reads it: each turn's words (or tweak) and what it became."""
    return [{"text": t.text, "tweak": t.tweak,
             "answer": RefinedTurn.from_dict(t.refined).history_answer() if t.refined else None} for t in path]


def _llm(context: WorkerContext, profile: Profile):
    """The profile's instruct model as a messages -> answer function, or None when it has none."""
    if "llm" not in profile.roles:
        return None

    def ask_llm(messages: list[dict]) -> str:
        try:
            llm = context.cache.model(profile, "llm")
        except ModelUnavailableError as exc:
            raise LlmAnswerError(f"the instruct model is not available ({exc})") from exc
        return ask(llm.model, llm.processor, messages)

    return ask_llm


def _tweaked(parent: RefinedTurn, tweak: dict, styles: dict[str, Style], text: str) -> RefinedTurn:
    """A per-image tweak keeps the parent's words; only a style tweak changes the preset."""
    changes = dict(intent="edit", reply=text, new_seed=tweak["kind"] == "variations", fallback=None, mapping=[])
    if tweak["kind"] == "style":
        style = styles[tweak["style"]]
        changes.update(style=None if style.name == "none" else style.name,
                       mapping=[{"from": style.label, "to": style.name, "slot": "style", "action": "replace"}])
    return dataclasses.replace(parent, **changes)


def _generation_request(profile: Profile, turn: Turn, refined: RefinedTurn, seed: int, source: dict | None) -> dict:
    """The cascade's parameters for this turn: the refined prompt at the turn's size, count and seed."""
    native = profile.prompt_language == "zh" and refined.language == "zh"
    prompt = (refined.prompt_original if native else refined.prompt)[:MAX_PROMPT_CHARS]
    width, height = size_for_aspect(turn.settings.get("aspect", "1:1"), max(profile.default_size))
    request = dict(prompt=prompt, negative_prompt=refined.negative_prompt[:MAX_PROMPT_CHARS],
                   style=refined.style or "none", count=turn.settings.get("count", 4), seed=seed,
                   width=width, height=height, stages=[s for s in profile.stages if s in ("base", "refiner")])
    tweak = turn.tweak
    if tweak and source is not None:
        request.update(width=source["width"], height=source["height"], stages=source["stages"], count=1)
        if tweak["kind"] == "aspect":
            request.update(width=width, height=height)
        if tweak["kind"] == "upscale":
            upscalers = [s for s in profile.stages if s in STAGE_SCALE and s not in source["stages"]]
            if not upscalers:
                raise JobError(f"The {profile.name} profile has no further super-resolution stage for this image.")
            request["stages"] = source["stages"] + upscalers[:1]
        if tweak["kind"] == "variations":
            request.update(init_asset_id=tweak["asset_id"], count=turn.settings.get("count", 4))
    return request


def run_chat_turn(context: WorkerContext, job) -> str:
    reporter = JobReporter(context, job.id)
    reporter.write(0.0, "refining the prompt")
    profile = job_profile(context, job.profile)
    with context.db.session() as session:
        turn = conversations.get_turn(session, job.params["turn_id"], job.owner_id)
        if turn is None:
            raise JobError("This conversation turn was deleted before it ran.")
        path = conversations.turn_path(session, turn)
        earlier = [t for t in path[:-1] if t.refined]
        inherited_seed = next((t.seed for t in reversed(path[:-1]) if t.seed is not None), None)
        source = None
        if turn.tweak:
            asset = repo.get_asset(session, turn.tweak["asset_id"], job.owner_id)
            if asset is None:
                raise JobError("The image this tweak starts from no longer exists.")
            source = dict(asset.params, width=asset.params.get("width", asset.width), height=asset.params.get("height", asset.height))

    if turn.refined is not None:
        refined = RefinedTurn.from_dict(turn.refined)
    elif turn.tweak:
        parent = next((RefinedTurn.from_dict(t.refined) for t in reversed(earlier) if t.refined.get("intent") in ("draw", "edit")), None)
        if parent is None:
            raise JobError("There is no picture in this conversation to tweak yet.")
        refined = _tweaked(parent, turn.tweak, context.rules.styles, turn.text)
    else:
        refined = refine_turn(_history(path), context.rules, _llm(context, profile), profile.prompt_language == "zh")

    seed = turn.seed
    if seed is None:
        if source is not None and turn.tweak["kind"] != "variations":
            seed = source["seed"]
        elif inherited_seed is not None and not refined.new_seed:
            seed = inherited_seed
        else:
            seed = random.SystemRandom().randint(0, MAX_SEED)
    with context.db.session() as session:
        stored = session.get(Turn, turn.id)
        stored.refined, stored.seed = refined.to_dict(), seed
        session.commit()
    if not refined.makes_images:
        return "replied"

    request = _generation_request(profile, turn, refined, seed, source)
    params = resolve_generation(request, profile, context.rules.styles)
    ids, scores = generate_images(context, job, params, reporter, scorer_text=refined.prompt or refined.prompt_original,
                                  parent_id=turn.tweak["asset_id"] if turn.tweak else None)
    order = ranked(scores) if scores else list(range(len(ids)))
    candidates = [{"asset_id": ids[i], "score": scores[i] if scores else None, "seed": image_seed(seed, i), "index": i}
                  for i in order]
    with context.db.session() as session:
        session.get(Turn, turn.id).candidates = candidates
        session.commit()
    return "done"


@app.task(name=CHAT_TURN, bind=True)
def chat_turn(self, job_id: str) -> None:
    execute(self, job_id, run_chat_turn)
