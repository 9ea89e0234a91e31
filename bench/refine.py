"""The prompt refiner's cost per chat turn, rule path against LLM path, and the reranker's cost per candidate.

(1) rules:  ``refine_turn`` with no model, over every turn of every dialogue in
            ``tests/data/refine_dialogues.json``. Each turn replays the conversation so far, with the earlier
            turns' answers, as the chat worker calls it (tasks/chat.py); --passes passes, every sample kept.
            The dialogue set's checks (expected and absent slot terms, style preset, new_seed) are run on
            each dialogue's last turn, as the unit tests do, for a pass rate per language.
(2) LLM:    ``refine_turn`` with the tiny profile's random Qwen2 behind ``engine.refiner.llm.ask``, on
            --llm-turns turns taken half Chinese, half English. Its answers are noise, so every turn is
            expected to fall back to the rules; the time includes the rules, the generation and the fallback.
(3) rerank: ``clip_scores`` on the tiny CLIP scorer for 1, 4 and 8 noise images of --size px against a
            refined prompt, the cost per candidate being the call's time divided by the batch.

Everything runs on the CPU with torch's default thread count; one warm-up call per path is not timed, so
model loads are excluded. The tiny models are built into a temporary directory unless --models-dir
already holds them.

    cd /work/main && HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python bench/refine.py
        [--passes 10] [--llm-turns 20] [--max-new-tokens 384] [--clip-runs 20] [--size 64] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no torchvision notices in the table's output

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from engine.loader import PipelineCache, Placement  # noqa: E402
from engine.profiles import load_profiles  # noqa: E402
from engine.refiner import RefinedTurn, RuleRefiner, TermDictionary, refine_turn  # noqa: E402
from engine.refiner.evaluation import dialogue_failures  # noqa: E402
from engine.refiner.llm import ask  # noqa: E402
from engine.refiner.terms import DEFAULT_TERMS_FILE  # noqa: E402
from engine.rerank import clip_scores  # noqa: E402
from engine.styles import load_styles  # noqa: E402
from engine.tiny import build_tiny_profile, tiny_profile_present  # noqa: E402

DIALOGUES_FILE = ROOT / "tests" / "data" / "refine_dialogues.json"
BATCHES = (1, 4, 8)  # candidates per clip_scores call
LANGUAGES = ("zh", "en")


# --- helpers ------------------------------------------------------------------------------------------

def history_entry(text: str, refined: RefinedTurn | None) -> dict:
    """One turn as the worker hands it to the refiner (tasks/chat.py's _history)."""
    return {"text": text, "tweak": None, "answer": refined.history_answer() if refined else None}


def p95(samples: list[float]) -> float:
    return float(np.percentile(samples, 95))


def timed(call, *args, **kwargs):
    start = time.perf_counter()
    value = call(*args, **kwargs)
    return value, time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.3f} s"


# --- (1) the rule path --------------------------------------------------------------------------------

def bench_rules(rules: RuleRefiner, dialogues: list[dict], passes: int):
    """Per-turn latencies by language, the last result of each dialogue, and the prompts made on the way."""
    latencies: dict[str, list[float]] = {lang: [] for lang in LANGUAGES}
    finals: dict[str, RefinedTurn] = {}
    for run in range(passes + 1):  # pass 0 is the warm-up
        for dialogue in dialogues:
            history: list[dict] = []
            for text in dialogue["turns"]:
                history.append(history_entry(text, None))
                result, seconds = timed(refine_turn, history, rules)
                history[-1] = history_entry(text, result)
                if run:
                    latencies.setdefault(dialogue["language"], []).append(seconds)
    for dialogue in dialogues:  # the last turn as the unit tests call it: the words alone
        finals[dialogue["id"]] = refine_turn([{"text": t} for t in dialogue["turns"]], rules)
    return latencies, finals


# --- (2) the LLM path ---------------------------------------------------------------------------------

def llm_conversations(dialogues: list[dict], turns: int) -> list[dict]:
    """Dialogues from the start of the set, cut to hold ``turns`` turns, half Chinese and half English."""
    chosen = []
    for i, lang in enumerate(LANGUAGES):
        budget = turns // len(LANGUAGES) + (i < turns % len(LANGUAGES))
        for dialogue in (d for d in dialogues if d["language"] == lang):
            if budget <= 0:
                break
            chosen.append(dict(dialogue, turns=dialogue["turns"][:budget]))
            budget -= len(chosen[-1]["turns"])
    return chosen


class CountingModel:
    """The LLM as ``ask`` sees it, recording each generate call's prompt and new token counts."""

    def __init__(self, model):
        self._model = model
        self.prompt_tokens: list[int] = []
        self.new_tokens: list[int] = []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, **kwargs):
        output = self._model.generate(**kwargs)
        prompt = kwargs["input_ids"].shape[1]
        self.prompt_tokens.append(prompt)
        self.new_tokens.append(output.shape[1] - prompt)
        return output


def bench_llm(rules: RuleRefiner, llm, conversations: list[dict], max_new_tokens: int):
    model = CountingModel(llm.model)
    generation: list[float] = []

    def ask_llm(messages: list[dict]) -> str:
        answer, seconds = timed(ask, model, llm.processor, messages, max_new_tokens=max_new_tokens)
        generation.append(seconds)
        return answer

    refine_turn([history_entry(conversations[0]["turns"][0], None)], rules, ask_llm)  # warm-up
    generation.clear()
    model.prompt_tokens.clear()
    model.new_tokens.clear()

    latencies: dict[str, list[float]] = {lang: [] for lang in LANGUAGES}
    fell_back, reasons = 0, Counter()
    for dialogue in conversations:
        history: list[dict] = []
        for text in dialogue["turns"]:
            history.append(history_entry(text, None))
            result, seconds = timed(refine_turn, history, rules, ask_llm)
            latencies[dialogue["language"]].append(seconds)
            if result.fallback is not None:
                fell_back += 1
                reasons[result.fallback.split(" (")[0]] += 1
            history[-1] = history_entry(text, result)
    return latencies, generation, fell_back, reasons, model.prompt_tokens, model.new_tokens


# --- (3) reranking ------------------------------------------------------------------------------------

def bench_rerank(scorer, size: int, text: str, runs: int) -> dict[int, list[float]]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(max(BATCHES))]
    per_candidate: dict[int, list[float]] = {}
    for batch in BATCHES:
        clip_scores(scorer, images[:batch], text)  # warm-up
        per_candidate[batch] = [timed(clip_scores, scorer, images[:batch], text)[1] / batch for _ in range(runs)]
    return per_candidate


# --- the report ---------------------------------------------------------------------------------------

def report(args, dialogues, finals, rule_s, llm_s, generation, fell_back, reasons, prompt_tokens, new_tokens,
           rerank_s, wall) -> None:
    all_rules = [s for lang in rule_s for s in rule_s[lang]]
    all_llm = [s for lang in llm_s for s in llm_s[lang]]
    llm_turns = len(all_llm)

    print(f"\nsettings: CPU, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, 1-minute load average "
          f"{args.load_before:.2f} before the timed runs (other processes on this machine skew every number); "
          f"{len(dialogues)} dialogues, {len(all_rules) // args.passes} turns, {args.passes} passes (rules); "
          f"{llm_turns} turns, max_new_tokens {args.max_new_tokens} (LLM); {args.clip_runs} calls per batch at "
          f"{args.size}x{args.size} px (rerank)")

    print(f"\n  {'measure':42} {'n':>5} {'median':>11} {'p95':>11}   note")
    rows = []
    for lang in (*LANGUAGES, "all"):
        samples = all_rules if lang == "all" else rule_s.get(lang, [])
        if samples:
            rows.append((f"rules, per turn, {lang}", len(samples), statistics.median(samples), p95(samples), ""))
    for lang in (*LANGUAGES, "all"):
        samples = all_llm if lang == "all" else llm_s[lang]
        if samples:
            note = f"{fell_back}/{llm_turns} fell back" if lang == "all" else ""
            rows.append((f"LLM + fallback, per turn, {lang}", len(samples), statistics.median(samples), p95(samples), note))
    rows.append(("  of which generation (ask)", len(generation), statistics.median(generation), p95(generation),
                 f"{statistics.mean(prompt_tokens):.0f} prompt + {statistics.mean(new_tokens):.0f} new tokens (mean)"))
    for batch, samples in rerank_s.items():
        rows.append((f"rerank, per candidate, batch of {batch}", len(samples), statistics.median(samples), p95(samples),
                     f"{statistics.median(samples) * batch * 1000:.2f} ms per call"))
    for name, n, median, high, note in rows:
        print(f"  {name:42} {n:>5} {ms(median):>11} {ms(high):>11}   {note}".rstrip())

    print("\n  ratio LLM/rules latency      median      p95")
    ratios = {}
    for lang in (*LANGUAGES, "all"):
        rule_samples = all_rules if lang == "all" else rule_s.get(lang, [])
        llm_samples = all_llm if lang == "all" else llm_s[lang]
        if rule_samples and llm_samples:
            ratios[lang] = statistics.median(llm_samples) / statistics.median(rule_samples)
            print(f"  {lang:26} {ratios[lang]:>9.0f}x {p95(llm_samples) / p95(rule_samples):>8.0f}x")

    print("\n  dialogue pass rate (rule path, last turn)")
    passed_by = Counter()
    total_by = Counter()
    failing = []
    for dialogue in dialogues:
        failures = dialogue_failures(finals[dialogue["id"]], dialogue)
        total_by[dialogue["language"]] += 1
        if failures:
            failing.append(f"{dialogue['id']}: {'; '.join(failures)}")
        else:
            passed_by[dialogue["language"]] += 1
    for lang in (*LANGUAGES, *sorted(set(total_by) - set(LANGUAGES)), "all"):
        passed = sum(passed_by.values()) if lang == "all" else passed_by[lang]
        total = sum(total_by.values()) if lang == "all" else total_by[lang]
        print(f"  {lang:26} {passed:>4}/{total:<4} {passed / total:>6.0%}")
    for line in failing:
        print(f"    failed {line}")
    if reasons:
        print("\n  LLM fallback reasons: " + "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common()))
    print(f"\n  total wall time {wall:.1f} s")

    passed, total = sum(passed_by.values()), sum(total_by.values())
    batch = max(BATCHES)
    print(f"\nsummary: on {torch.get_num_threads()} CPU threads the rule refiner takes "
          f"{ms(statistics.median(all_rules))} per turn (p95 {ms(p95(all_rules))}) and passes {passed}/{total} "
          f"dialogues (zh {passed_by['zh']}/{total_by['zh']}, en {passed_by['en']}/{total_by['en']}); the tiny-LLM "
          f"path takes {ms(statistics.median(all_llm))} per turn at max_new_tokens {args.max_new_tokens} "
          f"({ratios.get('all', float('nan')):.0f}x the rules, {fell_back}/{llm_turns} fell back); CLIP reranking "
          f"costs {ms(statistics.median(rerank_s[batch]))} per candidate in a batch of {batch} at {args.size} px")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--passes", type=int, default=10, help="timed passes over the dialogue set, rule path (default 10)")
    cli.add_argument("--llm-turns", type=int, default=20, help="turns through the tiny LLM (default 20)")
    cli.add_argument("--max-new-tokens", type=int, default=384,
                     help="generation limit of the LLM path (default 384, what the worker uses)")
    cli.add_argument("--clip-runs", type=int, default=20, help="timed clip_scores calls per batch size (default 20)")
    cli.add_argument("--size", type=int, default=64, help="candidate image width and height in px (default 64)")
    cli.add_argument("--models-dir", type=Path,
                     help="a models folder holding tiny/ (default: build the tiny profile into a temporary folder)")
    args = cli.parse_args()

    for needed in (DEFAULT_TERMS_FILE, DIALOGUES_FILE):
        if not needed.is_file():
            sys.exit(f"{needed.relative_to(ROOT)} is missing; the refiner bench needs it")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    started = time.perf_counter()
    dialogues = json.loads(DIALOGUES_FILE.read_text(encoding="utf-8"))
    rules = RuleRefiner(TermDictionary.load(), load_styles())

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        models_dir = args.models_dir
        if models_dir is None or not tiny_profile_present(models_dir / "tiny"):
            models_dir = Path(tmp) / "models"
            print("building the tiny profile ...", flush=True)
            build_tiny_profile(models_dir / "tiny")
        profile = load_profiles(models_dir=models_dir)["tiny"]
        cache = PipelineCache(Placement.choose("cpu"))

        args.load_before = os.getloadavg()[0]
        print(f"rule path: {len(dialogues)} dialogues x {args.passes} passes ...", flush=True)
        rule_s, finals = bench_rules(rules, dialogues, args.passes)

        print(f"LLM path: {args.llm_turns} turns, max_new_tokens {args.max_new_tokens} ...", flush=True)
        llm = cache.model(profile, "llm")
        llm_s, generation, fell_back, reasons, prompt_tokens, new_tokens = bench_llm(
            rules, llm, llm_conversations(dialogues, args.llm_turns), args.max_new_tokens)

        print(f"reranking: batches of {', '.join(map(str, BATCHES))} at {args.size} px ...", flush=True)
        text = next((r.prompt for r in finals.values() if r.prompt), "a lighthouse on a cliff at dusk")
        rerank_s = bench_rerank(cache.model(profile, "scorer"), args.size, text, args.clip_runs)

    report(args, dialogues, finals, rule_s, llm_s, generation, fell_back, reasons, prompt_tokens, new_tokens,
           rerank_s, time.perf_counter() - started)


if __name__ == "__main__":
    main()
