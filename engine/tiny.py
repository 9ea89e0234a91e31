"""The offline ``tiny`` profile: every role built from small configs with random weights.

The configs are those of diffusers' own fast tests. Each pipeline is saved with ``save_pretrained`` and
later loaded back through the same ``from_pretrained`` code a hub id goes through. Images are noise.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionLatentUpscalePipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTImageProcessorPil,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    VitPoseBackboneConfig,
    VitPoseConfig,
    VitPoseForPoseEstimation,
    VitPoseImageProcessorPil,
)

from engine.tiny_faces import build_face_pack, build_faceid_checkpoint

ROLES = ("base", "refiner", "latent_x2", "x4", "inpaint", "controlnet", "controlnet_pose", "controlnet_depth", "llm",
         "scorer", "pose", "depth")
SEGMENTER_FILE = "segmenter/u2net.onnx"
FACES_DIR = "faces"
FACEID_FILE = "faceid/ip-adapter-faceid_tiny.safetensors"
FAST_LORA_DIR = "fast"  # the stand-in for a distilled few-step LoRA (LCM-LoRA, Lightning): the profile's fast mode
FAST_LORA_FILE = "pytorch_lora_weights.safetensors"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# rembg's u2net input normalisation (ImageNet mean and std, after dividing by the image's maximum).
U2NET_MEAN, U2NET_STD = IMAGENET_MEAN, IMAGENET_STD
# Qwen's ChatML layout, so the tiny LM goes through the same apply_chat_template call as the real one.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _clip_tokenizer(workdir: Path) -> CLIPTokenizer:
    """Byte-level BPE with no merges: one token per character, every id below the tiny vocab size."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    # The highest id, because CLIPTextModel pools at argmax(input_ids) for legacy eos ids.
    vocab["<|endoftext|>"] = len(vocab)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "vocab.json").write_text(json.dumps(vocab))
    (workdir / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(workdir), model_max_length=77)


def _clip_config(**overrides) -> CLIPTextConfig:
    cfg = dict(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
               num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000, hidden_act="gelu",
               projection_dim=32)
    cfg.update(overrides)
    return CLIPTextConfig(**cfg)


def _sdxl_unet(cross_attention_dim: int, projection_dim: int) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), norm_num_groups=8,
        projection_class_embeddings_input_dim=projection_dim, cross_attention_dim=cross_attention_dim,
    )


def _vae(blocks: int, channels: list[int], **extra) -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=channels, in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks, **extra,
    )


def build_base_and_refiner(tokenizer: CLIPTokenizer):
    # A 3-block VAE (scale factor 4) keeps 64 px images on a small latent.
    vae = _vae(3, [16, 32, 32], norm_num_groups=16, sample_size=64)
    text_encoder = CLIPTextModel(_clip_config())
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config())
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    base = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=_sdxl_unet(64, 80), scheduler=scheduler,
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None, tokenizer_2=tokenizer,
        unet=_sdxl_unet(32, 72), scheduler=scheduler, requires_aesthetics_score=True,
    )
    return base, refiner


def build_fast_lora(base: StableDiffusionXLPipeline, destination: Path) -> None:
    """A LoRA over the base's attention and feed-forward layers, as LCM-LoRA adapts them, with random up and
    down matrices (peft starts the up matrices at zero, which would change nothing). ``base`` is left as it was."""
    base.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.2"]),
                          adapter_name="fast")
    layers = {key: torch.randn_like(value) * 0.1 for key, value in get_peft_model_state_dict(base.unet, adapter_name="fast").items()}
    base.unet.delete_adapters("fast")
    StableDiffusionXLPipeline.save_lora_weights(destination, unet_lora_layers=layers, weight_name=FAST_LORA_FILE)


def build_inpaint(base: StableDiffusionXLPipeline) -> StableDiffusionXLInpaintPipeline:
    """SDXL inpainting with the 9-channel UNet of real inpainting models (latents, masked image, mask);
    it shares the base's VAE and text encoders, as the real profile's inpainting model does."""
    config = dict(base.unet.config, in_channels=9)
    return StableDiffusionXLInpaintPipeline(
        vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2, tokenizer=base.tokenizer,
        tokenizer_2=base.tokenizer_2, unet=UNet2DConditionModel.from_config(config), scheduler=base.scheduler,
        requires_aesthetics_score=False,
    )


def build_controlnet(base: StableDiffusionXLPipeline) -> ControlNetModel:
    # Two downsamplings in the condition embedding match the tiny VAE's scale factor of 4.
    controlnet = ControlNetModel.from_unet(base.unet, conditioning_embedding_out_channels=(16, 32, 32))
    # A new ControlNet's zero convolutions (the condition's way in, the residuals' way out) start at zero, so it
    # has no effect until trained; random ones make its condition and weight change the picture, as a trained one's do.
    with torch.no_grad():
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]:
            torch.nn.init.normal_(conv.weight, std=0.1)
    return controlnet


def build_pose_estimator() -> tuple[VitPoseForPoseEstimation, VitPoseImageProcessorPil]:
    """A two-layer VitPose (top-down, 17 COCO keypoints) on 64×48 crops (the real ones take 256×192).

    The PIL image processor saves the same ``VitPoseImageProcessor`` config as the torchvision one, without
    its warning that torchvision is missing; ``AutoProcessor`` picks the backend again when loading.
    """
    backbone = VitPoseBackboneConfig(image_size=[64, 48], patch_size=[16, 16], hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, mlp_ratio=2, out_indices=[2])
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).eval()
    return model, VitPoseImageProcessorPil(size={"height": 64, "width": 48})


def build_depth_estimator() -> tuple[DepthAnythingForDepthEstimation, DPTImageProcessorPil]:
    """A Depth Anything with a four-layer Dinov2 backbone (patch 14) and 56 px inputs.

    The image processor is Depth-Anything-V2-Small's (aspect ratio kept, sides a multiple of the patch size,
    ImageNet normalisation) at 56 px instead of 518.
    """
    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            mlp_ratio=2, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    images = DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                  do_pad=False, resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return DepthAnythingForDepthEstimation(config).eval(), images


def build_segmenter(path: Path, threshold: float = 0.8, sharpness: float = 40.0) -> Path:
    """An ONNX model with u2net's inputs and outputs (``input.1`` 1×3×320×320, seven 1×1×320×320 maps).

    Its one 1×1 convolution undoes rembg's normalisation and thresholds brightness: it finds a dark or
    coloured object on a light background. Not learned, so tests can check the segmentation path against
    a known mask.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # sigmoid(k * (threshold - mean brightness)), brightness_c = x_c * std_c + mean_c
    weight = np.array([-sharpness * s / 3 for s in U2NET_STD], dtype=np.float32).reshape(1, 3, 1, 1)
    bias = np.array([sharpness * (threshold - sum(U2NET_MEAN) / 3)], dtype=np.float32)
    outputs = [f"d{i}" for i in range(7)]
    nodes = [helper.make_node("Conv", ["input.1", "weight", "bias"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], [outputs[0]])]
    nodes += [helper.make_node("Identity", [outputs[0]], [name]) for name in outputs[1:]]
    graph = helper.make_graph(
        nodes, "tiny_u2net",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, 320, 320]) for name in outputs],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    # IR version 9 (onnx 1.15) loads in every onnxruntime rembg supports.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_latent_x2(tokenizer: CLIPTokenizer) -> StableDiffusionLatentUpscalePipeline:
    unet = UNet2DConditionModel(
        act_fn="gelu", attention_head_dim=8, norm_num_groups=None, block_out_channels=[32, 32, 64, 64],
        time_cond_proj_dim=160, conv_in_kernel=1, conv_out_kernel=1, cross_attention_dim=32,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        in_channels=8, mid_block_type=None, only_cross_attention=False, out_channels=5,
        resnet_time_scale_shift="scale_shift", time_embedding_type="fourier", timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
    )
    return StableDiffusionLatentUpscalePipeline(
        vae=_vae(4, [32, 32, 64, 64]).eval(), text_encoder=CLIPTextModel(_clip_config(hidden_act="quick_gelu", projection_dim=512)),
        tokenizer=tokenizer, unet=unet.eval(), scheduler=EulerDiscreteScheduler(prediction_type="sample"),
    )


def build_x4(tokenizer: CLIPTokenizer) -> StableDiffusionUpscalePipeline:
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64), layers_per_block=2, sample_size=32, in_channels=7, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, use_linear_projection=True,
        only_cross_attention=(True, True, False), num_class_embeds=100,
    )
    return StableDiffusionUpscalePipeline(
        vae=_vae(3, [32, 32, 64], scaling_factor=0.08333), text_encoder=CLIPTextModel(_clip_config(projection_dim=512)),
        tokenizer=tokenizer, unet=unet, low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"), max_noise_level=350,
    )


def build_llm() -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """A two-layer Qwen2 with a byte-level tokenizer (one token per byte) and a ChatML chat template."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)} | {s: len(alphabet) + i for i, s in enumerate(specials)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        chat_template=CHATML_TEMPLATE, model_max_length=8192)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"], tie_word_embeddings=True)
    return Qwen2ForCausalLM(config).eval(), tokenizer


def build_scorer(tokenizer: CLIPTokenizer) -> tuple[CLIPModel, CLIPProcessor]:
    """A CLIP with 32 px images and the tiny character tokenizer."""
    text = _clip_config(projection_dim=32).to_dict()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=32, patch_size=8, projection_dim=32).to_dict()
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def build_tiny_profile(destination: str | Path, seed: int = 0) -> Path:
    """Write every tiny role under ``destination/<role>``; a finished folder is replaced atomically."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".tiny-") as tmp:
        staging = Path(tmp) / "profile"
        tokenizer = _clip_tokenizer(Path(tmp) / "tokenizer")
        base, refiner = build_base_and_refiner(tokenizer)
        # The three ControlNets are built one after another, so each gets different random weights.
        pipelines = {"base": base, "refiner": refiner, "latent_x2": build_latent_x2(tokenizer), "x4": build_x4(tokenizer),
                     "inpaint": build_inpaint(base), "controlnet": build_controlnet(base),
                     "controlnet_pose": build_controlnet(base), "controlnet_depth": build_controlnet(base)}
        for role, pipe in pipelines.items():
            pipe.save_pretrained(staging / role, safe_serialization=True)
        build_segmenter(staging / SEGMENTER_FILE)
        build_face_pack(staging / FACES_DIR)
        build_faceid_checkpoint(base.unet, staging / FACEID_FILE)
        build_fast_lora(base, staging / FAST_LORA_DIR)
        models = {"llm": build_llm(), "scorer": build_scorer(tokenizer), "pose": build_pose_estimator(),
                  "depth": build_depth_estimator()}
        for role, parts in models.items():
            for part in parts:
                part.save_pretrained(staging / role)
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    return destination


def tiny_profile_present(destination: str | Path) -> bool:
    folder = Path(destination)
    return all((folder / path).exists() for path in (SEGMENTER_FILE, FACES_DIR, FACEID_FILE, f"{FAST_LORA_DIR}/{FAST_LORA_FILE}")) and all(
        (folder / role / "model_index.json").is_file() or (folder / role / "config.json").is_file() for role in ROLES)
