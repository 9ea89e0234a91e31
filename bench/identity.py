"""Where the time of one identity picture goes: face analysis, generation with the FaceID adapter against
the same generation without it, and the similarity check of the picture drawn.

Per run, each stage is timed on its own, one image each:

  face analysis     ``FaceAnalyzer.faces`` (the profile's insightface pack through ``PipelineCache.faces``)
                    on a 640x480 photo: detection, alignment and the identity embedding of every face.
                    The photo is drawn for the tiny pack (a bright square on a dark background, as
                    tests/support_faces.py draws them); other profiles read --photo (default insightface's
                    own group photo t1.jpg, fitted into 640x480).
  plain             ``run_cascade`` without an identity: the base stage at the profile's size and steps.
  identity          ``run_cascade`` with ``IdentityCondition(embedding, --scale)``, the same parameters and
                    seed: the adapter is put into the cached pipeline and taken out again, as every identity
                    job does; the row below it is that in-and-out alone (``identity_applied`` around nothing).
  similarity        ``FaceAnalyzer.faces`` on the picture drawn + the cosine of its largest face's embedding
                    and the photo's (no face found: analysis only).

Run i draws with seed i. The two generations run side by side in one run (their order alternates from run to run) so they meet the
same machine; the ratio of their medians is printed. One warm-up run first loads the pipeline, the face
pack and the adapter's weights (read once per worker) and is not timed. The tiny profile is built into a
temporary folder unless --models-dir already holds it; its pictures are noise and its face pack finds
bright squares, so its similarities say nothing about likeness, only what the check costs.

    cd /work/main && .venv/bin/python bench/identity.py
        [--profile tiny] [--runs 5] [--steps N] [--width PX --height PX] [--scale 0.8] [--photo PATH]
        [--device auto|cpu|cuda] [--threads N] [--models-dir DIR]

On the CPU, tiny runs on one torch thread unless --threads says otherwise (bench/train.py says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# A bench times; it does not download. Real profiles must be in the Hugging Face cache (and insightface's
# pack in ~/.insightface) already.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import machine, onnx_runtime, sync, timed  # noqa: E402
from engine.cascade import run_cascade  # noqa: E402
from engine.faces import similarity  # noqa: E402
from engine.identity import IdentityCondition, identity_applied  # noqa: E402
from engine.loader import PipelineCache, Placement  # noqa: E402
from engine.params import ParamError, resolve_generation  # noqa: E402
from engine.profiles import load_profiles  # noqa: E402
from engine.styles import load_styles  # noqa: E402
from engine.tiny import build_tiny_profile, tiny_profile_present  # noqa: E402

PHOTO_SIZE = (640, 480)
STAGES = ("face analysis", "plain", "identity", "similarity")
ADAPTER = "  of which adapter in+out"
TINY_CPU_THREADS = 1
PROMPT = "a portrait photo of a person, soft window light"


# --- inputs -------------------------------------------------------------------------------------------

def tiny_photo() -> Image.Image:
    from tests.support_faces import PERSON_A, face_photo

    return face_photo([(240, 120, 200, PERSON_A)], size=PHOTO_SIZE)


def real_photo(path: Path | None) -> Image.Image:
    """--photo, or insightface's group photo, fitted into 640x480 on black."""
    if path is None:
        import insightface

        path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    photo = Image.open(path).convert("RGB")
    photo.thumbnail(PHOTO_SIZE, Image.LANCZOS)
    canvas = Image.new("RGB", PHOTO_SIZE)
    canvas.paste(photo, ((PHOTO_SIZE[0] - photo.width) // 2, (PHOTO_SIZE[1] - photo.height) // 2))
    return canvas


# --- one run ------------------------------------------------------------------------------------------

def one_run(index: int, photo, analyzer, params, profile, cache, scale: float) -> tuple[dict, float | None, int]:
    device = cache.placement.device
    seconds = {}
    faces, seconds["face analysis"] = timed(analyzer.faces, photo)
    if not faces:
        sys.exit("no face found in the photo: give another --photo")
    condition = IdentityCondition(faces[0].embedding, scale)

    def generate(identity):
        sync(device)
        start = time.perf_counter()
        image = run_cascade(dataclasses.replace(params, seed=index), profile, cache, identity=identity).images[0]
        sync(device)
        return image, time.perf_counter() - start

    order = (None, condition) if index % 2 == 0 else (condition, None)
    drawn = {}
    for identity in order:
        name = "plain" if identity is None else "identity"
        drawn[name], seconds[name] = generate(identity)

    base = cache.pipeline(profile, "base")
    weights = cache.faceid_weights(profile)
    sync(device)
    start = time.perf_counter()
    with identity_applied(base, weights, condition):
        pass
    sync(device)
    seconds[ADAPTER] = time.perf_counter() - start

    def check():
        found = analyzer.faces(drawn["identity"])
        return (similarity(found[0].embedding, condition.embedding) if found else None), len(found)

    (score, found), seconds["similarity"] = timed(check)
    return seconds, score, found


# --- the report ---------------------------------------------------------------------------------------

def report(samples: list[dict], scores: list[float | None], found: list[int]) -> None:
    rows = (*STAGES[:3], ADAPTER, STAGES[3])
    medians = {row: statistics.median(s[row] for s in samples) for row in rows}
    print(f"\n  {'stage (seconds per image)':28} {'median s':>10} {'min s':>9} {'max s':>9}   (n = {len(samples)} runs)")
    for row in rows:
        values = [s[row] for s in samples]
        print(f"  {row:28} {medians[row]:>10.4f} {min(values):>9.4f} {max(values):>9.4f}")
    ratios = [s["identity"] / s["plain"] for s in samples]
    print(f"\n  identity vs plain generation: {medians['identity'] / medians['plain']:.3f}x the median time "
          f"(+{medians['identity'] - medians['plain']:.4f} s; per-run ratios "
          f"{', '.join(f'{r:.2f}' for r in ratios)})")
    whole = medians["face analysis"] + medians["identity"] + medians["similarity"]
    print(f"  one identity picture, analysis + generation + check: {whole:.4f} s "
          f"({medians['face analysis'] / whole:.1%} analysis, {medians['similarity'] / whole:.1%} check)")
    shown = ", ".join("no face" if s is None else f"{s:.3f}" for s in scores)
    print(f"  similarity of the picture drawn to the photo's face: {shown} (faces found: "
          f"{', '.join(map(str, found))})")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--profile", default="tiny", help="model profile (default tiny, built if needed)")
    cli.add_argument("--runs", type=int, default=5, help="timed runs (default 5)")
    cli.add_argument("--steps", type=int, help="denoising steps (default: the profile's)")
    cli.add_argument("--width", type=int, help="picture width in px (default: the profile's)")
    cli.add_argument("--height", type=int, help="picture height in px (default: the profile's)")
    cli.add_argument("--scale", type=float, default=0.8, help="the identity adapter's scale (default 0.8)")
    cli.add_argument("--photo", type=Path, help="the face photo for a real profile (default insightface's t1.jpg)")
    cli.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda")
    cli.add_argument("--threads", type=int,
                     help=f"torch threads (default: {TINY_CPU_THREADS} for tiny on the CPU, else torch's own choice)")
    cli.add_argument("--models-dir", type=Path,
                     help="a models folder holding tiny/ (default data/models, else the tiny profile is built "
                          "into a temporary folder)")
    args = cli.parse_args()
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()  # no per-job "image_encoder is not loaded" notices
    diffusers.utils.logging.disable_progress_bar()
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)

    cache = PipelineCache(Placement.choose(args.device))
    device = cache.placement.device
    if args.threads or (args.profile == "tiny" and not device.startswith("cuda")):
        torch.set_num_threads(args.threads or TINY_CPU_THREADS)

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        models_dir = args.models_dir or ROOT / "data" / "models"
        if args.profile == "tiny" and not tiny_profile_present(models_dir / "tiny"):
            models_dir = Path(tmp) / "models"
            print("building the tiny profile (not timed) ...", flush=True)
            build_tiny_profile(models_dir / "tiny")
        profiles = load_profiles(models_dir=models_dir)
        if args.profile not in profiles:
            sys.exit(f"unknown profile {args.profile!r}; known: {', '.join(profiles)}")
        profile = profiles[args.profile]
        for role in ("faces", "identity"):
            if role not in profile.roles:
                sys.exit(f"the {profile.name} profile has no {role!r} role: it cannot keep a face")
        raw = {"prompt": PROMPT, "seed": 0, "count": 1, "steps": args.steps, "width": args.width, "height": args.height}
        try:
            params = resolve_generation({k: v for k, v in raw.items() if v is not None}, profile, load_styles(),
                                        random.Random(0))
        except ParamError as exc:
            sys.exit(str(exc))
        photo = tiny_photo() if profile.name == "tiny" else real_photo(args.photo)
        print(f"picture: {profile.name} profile, {params.width}x{params.height} px, {params.steps} steps, guidance "
              f"{params.guidance:g}, sampler {params.sampler}, base stage only, 1 image per job; identity scale "
              f"{args.scale:g}; photo {photo.width}x{photo.height} px", flush=True)
        print("machine:", machine(device, "diffusion", {"diffusers": diffusers.__version__, "onnxruntime": onnx_runtime()}), flush=True)

        print("loading the face pack, the pipeline and the adapter's weights (warm-up run, not timed) ...", flush=True)
        analyzer = cache.faces(profile)
        one_run(0, photo, analyzer, params, profile, cache, args.scale)
        loads = cache.loads

        print(f"timed runs, 1-minute load average before: {os.getloadavg()[0]:.2f} "
              "(other processes on this machine skew every number)", flush=True)
        samples, scores, found = [], [], []
        for index in range(args.runs):
            seconds, score, count = one_run(index, photo, analyzer, params, profile, cache, args.scale)
            samples.append(seconds)
            scores.append(score)
            found.append(count)
            print(f"  run {index}: " + "   ".join(f"{stage} {seconds[stage]:.4f} s" for stage in STAGES), flush=True)
        if cache.loads != loads:
            print(f"  note: the timed runs loaded {cache.loads - loads} models; the cache should have held them")
    print(f"\n1-minute load average after: {os.getloadavg()[0]:.2f}")
    report(samples, scores, found)


if __name__ == "__main__":
    main()
