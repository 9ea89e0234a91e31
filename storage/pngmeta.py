"""PNG outputs carry their generation parameters in text chunks so other tools can read them back.

``parameters`` holds the A1111-style text that many tools parse; ``studio`` holds the exact JSON.
"""

from __future__ import annotations

import io
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def a1111_text(params: dict) -> str:
    lines = [params.get("full_prompt") or params.get("prompt", "")]
    if params.get("full_negative_prompt"):
        lines.append(f"Negative prompt: {params['full_negative_prompt']}")
    fields = {
        "Steps": params.get("steps"),
        "Sampler": params.get("sampler"),
        "CFG scale": params.get("guidance"),
        "Seed": params.get("seed"),
        "Size": f"{params.get('width')}x{params.get('height')}" if params.get("width") else None,
        "Model": params.get("profile"),
        "Stages": "+".join(params.get("stages", [])) or None,
    }
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items() if v is not None))
    return "\n".join(lines)


def png_with_params(image: Image.Image, params: dict) -> bytes:
    info = PngInfo()
    info.add_text("parameters", a1111_text(params))
    info.add_itxt("studio", json.dumps(params, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_params(data: bytes) -> dict:
    """The studio's parameter JSON embedded in a PNG, or {} when there is none."""
    with Image.open(io.BytesIO(data)) as image:
        raw = image.text.get("studio") if hasattr(image, "text") else None
    return json.loads(raw) if raw else {}
