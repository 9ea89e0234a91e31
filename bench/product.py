"""Where the time of one product picture goes: segmentation, placement, inpainting, compositing, export.

For --images pictures of one synthetic product photo (a bottle drawn with PIL on a light, slightly noisy
backdrop, as a phone photo of a product on a sheet of paper), each stage is timed on its own:

  segmentation  ``product_mask`` through the profile's rembg session (``PipelineCache.segmenter``), cleaning
                included; one warm-up call first, so the session load is excluded.
  placement     ``place_product``: crop, scale and lay the product on the canvas with its feathered edge.
  inpainting    what ``render_product_picture`` does around the pipeline: ``inpainting_inputs`` (and
                ``edge_map`` with --controlnet), the sampler, the prompt embeddings, the pipeline call and
                the background's resize to the canvas. The same calls in the same order as
                engine/product/synthesis.py; the two rows below it are the prompt encoding (compel) and
                the pipeline call alone.
  compositing   ``contact_shadow`` + ``composite``.
  export        what the worker stores (tasks/product.py): ``export_files`` (PNGs of the layers, the
                manifest, the PSD and the zip) and the composite's PNG.

Image i uses seed i. One ``render_product_picture`` call before the timed runs loads the pipelines and warms
them up; one after them, with image 0's seed, checks that the staged calls make the picture synthesis.py
makes (the pixel difference is printed) and times the whole render for comparison. The tiny profile is
built into a temporary folder unless --models-dir already holds it; its pictures are noise, but every
stage runs at the canvas's full size.

    cd /work/main && .venv/bin/python bench/product.py
        [--profile tiny] [--canvas 1:1|4:5|9:16|16:9|WxH|custom WxH] [--images 5] [--controlnet]
        [--steps N] [--scene studio_seamless] [--device auto|cpu|cuda] [--threads N] [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# A bench times; it does not download. Real profiles must be in the Hugging Face cache already
# (HF_HUB_OFFLINE=0 on the command line lets them download, before the timed runs).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no torchvision or long-prompt notices in the table
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from bench.common import machine, onnx_runtime, timed  # noqa: E402
from engine.cascade import set_sampler  # noqa: E402
from engine.loader import PipelineCache, Placement  # noqa: E402
from engine.params import ParamError  # noqa: E402
from engine.product.compose import composite, contact_shadow, edge_map, inpainting_inputs, place_product  # noqa: E402
from engine.product.layers import LayeredPicture, export_files, png_bytes  # noqa: E402
from engine.product.request import CANVAS_FORMATS, CUSTOM_FORMAT, generation_size, resolve_product  # noqa: E402
from engine.product.scenes import load_scenes  # noqa: E402
from engine.product.segment import product_mask  # noqa: E402
from engine.product.synthesis import RenderSettings, render_product_picture  # noqa: E402
from engine.profiles import load_profiles  # noqa: E402
from engine.prompt_encoding import prompt_arguments  # noqa: E402
from engine.tiny import build_tiny_profile, tiny_profile_present  # noqa: E402

PHOTO_SIZE = (600, 800)  # a product photo as uploaded, before the segmenter's own resize to 320 px
STAGES = ("segmentation", "placement", "inpainting", "compositing", "export")
PROMPTS = "  of which prompt encoding"
PIPELINE_ONLY = "  of which pipeline call"


# --- inputs -------------------------------------------------------------------------------------------

def product_photo(size: tuple[int, int] = PHOTO_SIZE, seed: int = 0) -> Image.Image:
    """A blue bottle with a red cap and a label, on a light backdrop with a lighting gradient and sensor noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-8, 8, width)[None, :, None] + np.linspace(-6, 6, height)[:, None, None]
    backdrop = np.clip(np.round(240 + ramp + rng.normal(0, 3, (height, width, 3))), 0, 255).astype(np.uint8)
    photo = Image.fromarray(backdrop)
    draw = ImageDraw.Draw(photo)
    cx, s = width // 2, height / 180  # drawn on a 180 px high grid, scaled to the photo
    body, cap = (30, 90, 160), (170, 40, 40)
    draw.rectangle([cx - 25 * s, 60 * s, cx + 24 * s, 159 * s], fill=body)
    draw.ellipse([cx - 25 * s, 40 * s, cx + 24 * s, 80 * s], fill=body)
    draw.rectangle([cx - 10 * s, 20 * s, cx + 9 * s, 50 * s], fill=cap)
    draw.rectangle([cx - 20 * s, 95 * s, cx + 19 * s, 125 * s], fill=(20, 60, 120))
    return photo


def canvas_request(tokens: list[str], profile, scene_name: str, controlnet: bool, steps: int | None):
    """The canvas, steps and guidance as the studio resolves them (resolve_product's checks included)."""
    name, width, height = tokens[0], None, None
    if name not in CANVAS_FORMATS:
        size = tokens[1] if name == CUSTOM_FORMAT and len(tokens) > 1 else name
        try:
            width, height = (int(side) for side in size.lower().split("x"))
        except ValueError:
            sys.exit(f"--canvas {' '.join(tokens)}: give one of {', '.join(CANVAS_FORMATS)}, WxH or custom WxH")
        name = CUSTOM_FORMAT
    raw = {"material_id": "bench", "scenes": [scene_name], "canvas_format": name, "width": width, "height": height,
           "variants": 1, "seed": 0, "steps": steps, "controlnet": controlnet}
    try:
        return resolve_product(raw, profile, load_scenes())
    except ParamError as exc:
        sys.exit(str(exc))


def use_local_segmenter(profile) -> None:
    """rembg opens a custom ONNX only from inside its model folder ($REMBG_HOME or $U2NET_HOME)."""
    spec = profile.roles.get("segmenter")
    if spec is not None and spec.model.endswith(".onnx"):
        os.environ["REMBG_HOME"] = str(Path(spec.model).resolve().parent)
        os.environ.pop("U2NET_HOME", None)


# --- one picture, stage by stage ----------------------------------------------------------------------

def inpaint(placed, scene, settings: RenderSettings, pipe) -> tuple[Image.Image, float, float]:
    """The background, made as render_product_picture makes it; the prompt encoding's and the pipeline
    call's own seconds."""
    image, repaint = inpainting_inputs(placed, settings.generation_size)
    width, height = settings.generation_size
    set_sampler(pipe, settings.sampler)
    extra = {}
    if settings.control_scale is not None:
        extra = {"control_image": edge_map(placed, settings.generation_size),
                 "controlnet_conditioning_scale": settings.control_scale}
    prompts, prompts_s = timed(prompt_arguments, pipe, [scene.full_prompt], [scene.negative])
    start = time.perf_counter()
    generated = pipe(
        **prompts, image=image, mask_image=repaint,
        width=width, height=height, strength=1.0, num_inference_steps=settings.steps,
        guidance_scale=settings.guidance, generator=torch.Generator("cpu").manual_seed(settings.seed),
        callback_on_step_end=lambda pipeline, step, timestep, kwargs: kwargs, **extra,
    ).images[0]
    pipeline_s = time.perf_counter() - start
    return generated.convert("RGB").resize(settings.canvas, Image.LANCZOS), prompts_s, pipeline_s


def export(picture: LayeredPicture) -> int:
    """Every file the worker stores for one picture; their total size in bytes."""
    files = [*export_files(picture).values(), png_bytes(picture.composite)]
    return sum(len(data) for data in files)


def one_picture(photo, segmenter, scene, placement, settings: RenderSettings, pipe) -> tuple[dict, LayeredPicture, int]:
    seconds = {}
    (mask, _), seconds["segmentation"] = timed(product_mask, photo, segmenter)
    placed, seconds["placement"] = timed(place_product, photo, mask, settings.canvas, placement)
    (background, seconds[PROMPTS], seconds[PIPELINE_ONLY]), seconds["inpainting"] = timed(
        inpaint, placed, scene, settings, pipe)

    def compose():
        shadow = contact_shadow(placed, scene.shadow) if settings.shadow and scene.shadow.opacity > 0 else None
        return shadow, composite(background, placed, shadow)

    (shadow, picture), seconds["compositing"] = timed(compose)
    layered = LayeredPicture(background=background, shadow=shadow, product=placed.layer, mask=placed.mask,
                             composite=picture, box=placed.box, info={"seed": settings.seed, "scene": scene.name})
    size, seconds["export"] = timed(export, layered)
    return seconds, layered, size


# --- the report ---------------------------------------------------------------------------------------

def report(samples: list[dict], render_s: float, render_diff: int, file_bytes: list[int]) -> None:
    medians = {stage: statistics.median(s[stage] for s in samples) for stage in (*STAGES, PROMPTS, PIPELINE_ONLY)}
    total = sum(medians[stage] for stage in STAGES)
    n = len(samples)
    print(f"\n  {'stage':26} {'median s':>10} {'share':>7} {'min s':>9} {'max s':>9}   (n = {n} images)")
    for stage in (*STAGES[:3], PROMPTS, PIPELINE_ONLY, *STAGES[3:]):
        values = [s[stage] for s in samples]
        print(f"  {stage:26} {medians[stage]:>10.4f} {medians[stage] / total:>7.1%} {min(values):>9.4f} "
              f"{max(values):>9.4f}")
    print(f"  {'total (sum of medians)':26} {total:>10.4f} {1:>7.0%}")
    print(f"\n  render_product_picture, whole, image 0 again: {render_s:.4f} s (its part of the table: placement + "
          f"inpainting + compositing = {medians['placement'] + medians['inpainting'] + medians['compositing']:.4f} s)")
    print(f"  staged calls vs render_product_picture, image 0: max pixel difference {render_diff} "
          f"({'the same picture' if render_diff == 0 else 'not bit-identical'})")
    print(f"  exported files per picture: {statistics.median(file_bytes) / 1e6:.2f} MB (median)")


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--profile", default="tiny", help="model profile (default tiny, built if needed)")
    cli.add_argument("--canvas", nargs="+", default=["1:1"], metavar="FORMAT",
                     help=f"{', '.join(CANVAS_FORMATS)}, WxH or 'custom WxH' (default 1:1)")
    cli.add_argument("--images", type=int, default=5, help="timed pictures (default 5)")
    cli.add_argument("--controlnet", action="store_true", help="inpaint with the profile's ControlNet")
    cli.add_argument("--steps", type=int, help="denoising steps (default: the profile's)")
    cli.add_argument("--scene", default="studio_seamless", help="scene preset (default studio_seamless)")
    cli.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda")
    cli.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    cli.add_argument("--models-dir", type=Path,
                     help="a models folder holding tiny/ (default: build the tiny profile into a temporary folder)")
    args = cli.parse_args()
    if args.images < 1:
        sys.exit("--images must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()  # no per-call VAE dtype notices between the rows
    diffusers.utils.logging.disable_progress_bar()
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]), flush=True)

    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        models_dir = args.models_dir or ROOT / "data" / "models"
        if args.profile == "tiny" and not tiny_profile_present(models_dir / "tiny"):
            models_dir = Path(tmp) / "models"
            print("building the tiny profile ...", flush=True)
            build_tiny_profile(models_dir / "tiny")
        profile = load_profiles(models_dir=models_dir)[args.profile]
        use_local_segmenter(profile)
        request = canvas_request(args.canvas, profile, args.scene, args.controlnet, args.steps)
        canvas = (request.width, request.height)
        scene = request.scene(0)
        placement = request.placement_for(scene)
        cache = PipelineCache(Placement.choose(args.device))
        device = cache.placement.device

        def settings(seed: int) -> RenderSettings:
            return RenderSettings(canvas=canvas, generation_size=generation_size(canvas, profile), seed=seed,
                                  steps=request.steps, guidance=request.guidance, sampler=profile.sampler,
                                  shadow=request.shadow,
                                  control_scale=request.control_scale if request.controlnet else None)

        photo = product_photo()
        control = f"on (scale {request.control_scale:g})" if request.controlnet else "off"
        print(f"picture: {args.profile} profile, canvas {request.canvas_format} {canvas[0]}x{canvas[1]} px, generated "
              f"at {settings(0).generation_size[0]}x{settings(0).generation_size[1]} px, {request.steps} steps, "
              f"sampler {profile.sampler}, ControlNet {control}, "
              f"scene {scene.name}, photo {photo.width}x{photo.height} px", flush=True)
        print("machine:", machine(device, "diffusion", {"diffusers": diffusers.__version__, "onnxruntime": onnx_runtime()}), flush=True)

        print("loading the segmenter and the inpainting pipeline (warm-up, not timed) ...", flush=True)
        def segmenter():
            return cache.segmenter(profile)

        mask, source = product_mask(photo, segmenter)
        pipe = cache.inpainting(profile, controlnet=request.controlnet)
        render_product_picture(photo, mask, scene, placement, settings(0), pipe)

        print(f"timed runs, 1-minute load average before: {os.getloadavg()[0]:.2f} "
              "(other processes on this machine skew every number)", flush=True)
        samples, pictures, file_bytes = [], [], []
        for index in range(args.images):
            seconds, picture, size = one_picture(photo, segmenter, scene, placement, settings(index), pipe)
            samples.append(seconds)
            file_bytes.append(size)
            if index == 0:
                pictures.append(picture)
            print(f"  image {index}: " + "   ".join(f"{stage} {seconds[stage]:.4f} s" for stage in STAGES), flush=True)

        check, render_s = timed(render_product_picture, photo, mask, scene, placement, settings(0), pipe)
        render_diff = int(np.abs(np.asarray(check.composite, dtype=np.int16)
                                 - np.asarray(pictures[0].composite, dtype=np.int16)).max())
    print(f"\n1-minute load average after: {os.getloadavg()[0]:.2f}; segmenter mask from {source}")
    report(samples, render_s, render_diff, file_bytes)


if __name__ == "__main__":
    main()
