"""Prompt embeddings that keep every word: long prompts are encoded in chunks instead of cut at 77 tokens.

compel splits the token sequence into windows the CLIP text encoders accept and concatenates their
embeddings, as A1111 does; it also reads its prompt-weighting syntax ("(red umbrella)1.3"). HunyuanDiT
needs none of this: its T5 encoder reads 256 tokens.
"""

from __future__ import annotations

import diffusers
from compel import Compel, CompelForSD, CompelForSDXL, ReturnedEmbeddingsType

SDXL_PIPELINES = (diffusers.StableDiffusionXLPipeline, diffusers.StableDiffusionXLImg2ImgPipeline,
                  diffusers.StableDiffusionXLInpaintPipeline, diffusers.StableDiffusionXLControlNetInpaintPipeline)
SD_PIPELINES = (diffusers.StableDiffusionPipeline, diffusers.StableDiffusionImg2ImgPipeline,
                diffusers.StableDiffusionInpaintPipeline, diffusers.StableDiffusionControlNetInpaintPipeline)


def prompt_arguments(pipe: diffusers.DiffusionPipeline, prompts: list[str], negatives: list[str]) -> dict:
    """Pipeline keyword arguments carrying the prompts: embeddings where the pipeline takes them."""
    device = str(pipe._execution_device)
    if isinstance(pipe, SDXL_PIPELINES):
        if pipe.text_encoder is not None:
            c = CompelForSDXL(pipe, device=device)(prompts, negative_prompt=negatives)
            return dict(prompt_embeds=c.embeds, pooled_prompt_embeds=c.pooled_embeds,
                        negative_prompt_embeds=c.negative_embeds, negative_pooled_prompt_embeds=c.negative_pooled_embeds)
        # The SDXL refiner has only the second (OpenCLIP) encoder.
        compel = Compel(tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2, device=device,
                        returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                        requires_pooled=True, truncate_long_prompts=False)
        embeds, pooled = compel(prompts + negatives)  # one call pads both halves to the same length
        n = len(prompts)
        return dict(prompt_embeds=embeds[:n], pooled_prompt_embeds=pooled[:n],
                    negative_prompt_embeds=embeds[n:], negative_pooled_prompt_embeds=pooled[n:])
    if isinstance(pipe, SD_PIPELINES):
        c = CompelForSD(pipe, device=device)(prompts, negative_prompt=negatives)
        return dict(prompt_embeds=c.embeds, negative_prompt_embeds=c.negative_embeds)
    return dict(prompt=prompts, negative_prompt=negatives)


def encoded_length(pipe: diffusers.DiffusionPipeline, prompt: str, negative: str) -> int:
    """How many tokens long the prompt's embeddings are (75 per window, as compel chunks them; 0 where the
    pipeline takes plain text). In one batch every prompt is padded to the longest, which changes a picture:
    jobs drawn together must have the same length to come out as they would alone."""
    embeds = prompt_arguments(pipe, [prompt], [negative]).get("prompt_embeds")
    return 0 if embeds is None else embeds.shape[1]
