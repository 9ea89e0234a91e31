"""The tiny profile's face-analysis pack: a detector with SCRFD's outputs and a recognizer with ArcFace's,
exported to ONNX so insightface's ``FaceAnalysis`` loads and routes them as it does a real pack.

Neither is learned. The detector finds bright squares on a dark background, one box per square, with
five keypoints where a face's eyes, nose and mouth corners sit; the recognizer's identity embedding is a
fixed random projection of the aligned crop's colours. So two photos of "the same person" (the same
colour) are alike, two people are not, and tests can check detection, alignment and similarity against
pictures they draw.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DETECTOR_FILE = "det_tiny.onnx"
RECOGNIZER_FILE = "rec_tiny.onnx"
STRIDES = (8, 16, 32)
# Erosion rounds: the largest square found is about twice this many detector cells (8 px each) across.
MAX_DEPTH = 48
# ArcFace's five reference points in its 112 px crop, as fractions: eyes, nose tip, mouth corners.
KEYPOINTS = ((0.3419, 0.4616), (0.6565, 0.4598), (0.5002, 0.6405), (0.3709, 0.8247), (0.6315, 0.8232))


class TinyFaceDetector(nn.Module):
    """Input ``input.1`` (1, 3, H, W) normalised as SCRFD's ``(x - 127.5) / 128``; per stride 8, 16, 32 the
    scores (N, 1), box distances (N, 4) and keypoint offsets (N, 10), N = H/s · W/s · 2 anchors, in
    stride units from each anchor, all outputs for one stride before the next as SCRFD's graphs order them.

    Only stride 8 finds faces: a cell is inside a face when most of its pixels are bright; its depth is its
    chessboard distance to the background (counted by repeated erosion); a face is the cell of greatest
    depth, whose box reaches the square's edges. Every anchor of one square predicts the same box, so
    SCRFD's non-maximum suppression keeps one."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kps_x", torch.tensor([p[0] for p in KEYPOINTS]).view(1, 5, 1, 1))
        self.register_buffer("kps_y", torch.tensor([p[1] for p in KEYPOINTS]).view(1, 5, 1, 1))

    @staticmethod
    def _anchors(per_cell: torch.Tensor) -> torch.Tensor:
        """(1, C, h, w) → (h · w · 2, C): row-major cells, each repeated for SCRFD's two anchors."""
        rows = per_cell.flatten(2).transpose(1, 2)[0]
        return torch.stack([rows, rows], dim=1).reshape(-1, per_cell.shape[1])

    def forward(self, image: torch.Tensor):
        brightness = image.mean(dim=1, keepdim=True) * (128 / 255) + 0.5
        inside = (F.avg_pool2d((brightness > 0.5).float(), 8) > 0.5).float()
        depth, eroded = inside, inside
        for _ in range(MAX_DEPTH):
            eroded = -F.max_pool2d(-eroded, 3, stride=1, padding=1)
            depth = depth + eroded
        # Several cells of a square can share its greatest depth: the blurred depth prefers the middle ones,
        # and a slight ramp the top-left of the rest, so one cell is the peak.
        blurred = F.avg_pool2d(F.avg_pool2d(depth, 3, stride=1, padding=1, count_include_pad=False), 3, stride=1, padding=1,
                               count_include_pad=False)
        ones = torch.ones_like(depth)
        ramp = torch.cumsum(ones, dim=2) + torch.cumsum(ones, dim=3)
        rank = depth + 0.1 * blurred - 2e-5 * ramp
        peak = ((rank == F.max_pool2d(rank, 3, stride=1, padding=1)) & (depth >= 2)).float()
        score = peak * 0.9 + 0.05
        # The square around a peak spans depth - 1 cells before the anchor's cell and depth after its corner.
        side = 2 * depth - 1
        boxes = torch.cat([depth - 1, depth - 1, depth, depth], dim=1)
        kps_x, kps_y = self.kps_x * side - (depth - 1), self.kps_y * side - (depth - 1)
        kps = torch.stack([kps_x, kps_y], dim=2).flatten(1, 2)
        outputs = [self._anchors(score), self._anchors(boxes), self._anchors(kps)]
        for factor in (2, 4):
            coarse = F.avg_pool2d(inside, factor) * 0
            outputs += [self._anchors(coarse), self._anchors(coarse.expand(-1, 4, -1, -1)),
                        self._anchors(coarse.expand(-1, 10, -1, -1))]
        # SCRFD reads outputs as all scores, then all boxes, then all keypoints, stride by stride.
        return tuple(outputs[kind::3][stride] for kind in range(3) for stride in range(len(STRIDES)))


class TinyFaceRecognizer(nn.Module):
    """ArcFace's interface: an aligned 112 px crop, normalised ``(x - 127.5) / 127.5``, to a 512-d
    embedding; here a fixed projection of the crop's 4×4 colours and their chroma."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(96, 512, generator=generator) / 96 ** 0.5)

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        colours = F.adaptive_avg_pool2d(crop, 4)
        chroma = colours - colours.mean(dim=1, keepdim=True)
        features = torch.cat([colours.flatten(1), 2 * chroma.flatten(1)], dim=1)
        return features @ self.projection


def build_face_pack(folder: str | Path, seed: int = 0) -> Path:
    """Export the detector and recognizer into ``folder`` as a pack ``FaceAnalysis(name=folder)`` loads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    detector_outputs = [f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in STRIDES]
    torch.onnx.export(TinyFaceDetector().eval(), (torch.zeros(1, 3, 64, 64),), str(folder / DETECTOR_FILE),
                      input_names=["input.1"], output_names=detector_outputs, opset_version=17, dynamo=False,
                      dynamic_axes={"input.1": {2: "height", 3: "width"}})
    torch.onnx.export(TinyFaceRecognizer(seed).eval(), (torch.zeros(1, 3, 112, 112),), str(folder / RECOGNIZER_FILE),
                      input_names=["input.1"], output_names=["embedding"], opset_version=17, dynamo=False,
                      dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}})
    return folder


def build_faceid_checkpoint(unet, path: str | Path, rank: int = 4, tokens: int = 4, seed: int = 0) -> Path:
    """A FaceID checkpoint for ``unet`` with the key layout of ``ip-adapter-faceid_sd15.bin``: the identity
    projection (``image_proj.proj.0/2``, ``norm``), ``to_k_ip``/``to_v_ip`` for every cross-attention
    processor and the bundled attention LoRA for every processor, numbered as ``unet.attn_processors``."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim

    def weight(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.05

    state = {"image_proj.proj.0.weight": weight(1024, 512), "image_proj.proj.0.bias": weight(1024),
             "image_proj.proj.2.weight": weight(cross * tokens, 1024), "image_proj.proj.2.bias": weight(cross * tokens),
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    modules = dict(unet.named_modules())
    for index, name in enumerate(unet.attn_processors):
        attention = modules[name.removesuffix(".processor")]
        hidden, context = attention.to_q.in_features, attention.to_k.in_features
        prefix = f"ip_adapter.{index}"
        if attention.is_cross_attention:
            state[f"{prefix}.to_k_ip.weight"] = weight(hidden, cross)
            state[f"{prefix}.to_v_ip.weight"] = weight(hidden, cross)
        for projection, features_in in (("to_q", hidden), ("to_k", context), ("to_v", context), ("to_out", hidden)):
            state[f"{prefix}.{projection}_lora.down.weight"] = weight(rank, features_in)
            state[f"{prefix}.{projection}_lora.up.weight"] = weight(hidden, rank)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
