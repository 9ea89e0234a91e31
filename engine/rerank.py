"""Candidate reranking: CLIP text-image similarity between each image and the refined English prompt.

The score is 100 × cosine (CLIPScore without its clamp at 0, so random test models still rank);
CLIP reads the prompt's first 77 tokens.
"""

from __future__ import annotations

import torch
from PIL import Image

from engine.loader import LoadedModel


def clip_scores(scorer: LoadedModel, images: list[Image.Image], text: str) -> list[float]:
    model, processor = scorer.model, scorer.processor
    inputs = processor(text=[text], images=[i.convert("RGB") for i in images], return_tensors="pt",
                       padding=True, truncation=True, max_length=77)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**inputs)
    image_embeds = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
    text_embeds = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
    cosine = (image_embeds @ text_embeds.T).squeeze(-1)
    return [round(float(s), 3) for s in 100 * cosine]


def ranked(scores: list[float]) -> list[int]:
    """Candidate indices, best score first; ties keep generation order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
