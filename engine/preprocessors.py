"""The control maps of image-to-image keeps: edges, pose and depth of a source image.

Each map is an RGB image of the source's size, drawn the way its ControlNet was trained to read it: white
Canny edges on black; an OpenPose body skeleton (coloured limbs and joints on black); depth with near
things bright and far things dark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from numpy.typing import ArrayLike
from PIL import Image

if TYPE_CHECKING:
    from engine.loader import LoadedModel

Point = tuple[float, float]

# For each of OpenPose's 18 body points, the COCO-17 keypoint it is (OpenPose's neck has none).
# OpenPose: nose, neck, right shoulder, elbow, wrist, left shoulder, elbow, wrist, right hip, knee, ankle,
# left hip, knee, ankle, right eye, left eye, right ear, left ear.
OPENPOSE_FROM_COCO: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
NECK = 1
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
# OpenPose's limbs (pairs of body points), in the order of their colours: the neck to the shoulders, the
# arms, the neck to the hips, the legs, the neck to the nose, and the eyes and ears.
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# One colour per body point; limb i takes colour i. These are the RGB colours the OpenPose ControlNets
# were trained on.
OPENPOSE_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                   (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                   (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_OPACITY = 0.6
# The OpenPose annotator's stick half-width and joint radius, in pixels of a 512 px image.
OPENPOSE_STICK, OPENPOSE_JOINT, OPENPOSE_SIDE = 4, 4, 512


def edge_map(image: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """Canny edges (hysteresis thresholds ``low`` and ``high``) of the grayscale image: white on black."""
    gray = np.asarray(image.convert("L"))
    edges = cv2.Canny(gray, low, high)
    return Image.fromarray(edges).convert("RGB")


def coco_to_openpose(keypoints: ArrayLike, scores: ArrayLike, min_score: float = 0.3) -> list[Point | None]:
    """COCO-17 keypoints (x, y per row) and their scores as OpenPose's 18 body points; a point scoring
    below ``min_score`` is None. The neck is the midpoint of the shoulders when both are kept."""
    keypoints, scores = np.asarray(keypoints, dtype=float), np.asarray(scores, dtype=float)

    def kept(index: int) -> Point | None:
        if scores[index] < min_score:
            return None
        return float(keypoints[index][0]), float(keypoints[index][1])

    points = [None if index is None else kept(index) for index in OPENPOSE_FROM_COCO]
    left, right = kept(COCO_LEFT_SHOULDER), kept(COCO_RIGHT_SHOULDER)
    if left is not None and right is not None:
        points[NECK] = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
    return points


def draw_openpose(points: Sequence[Point | None], size: tuple[int, int]) -> Image.Image:
    """OpenPose's body drawing of 18 points (None where missing) on a black ``size`` (width, height) image.

    As ControlNet's OpenPose annotator draws it: each limb a filled ellipse between its points, blended at
    0.6 opacity in its colour, then each joint a solid circle in its colour. Widths scale with the image,
    from the annotator's 4 px at 512 px, so a small or large map reads like the ones the ControlNets learnt.
    """
    width, height = size
    scale = max(width, height) / OPENPOSE_SIDE
    stick, joint = max(1, round(OPENPOSE_STICK * scale)), max(1, round(OPENPOSE_JOINT * scale))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for (start, end), color in zip(OPENPOSE_LIMBS, OPENPOSE_COLORS):
        if points[start] is None or points[end] is None:
            continue
        (x0, y0), (x1, y1) = points[start], points[end]
        center = (int((x0 + x1) / 2), int((y0 + y1) / 2))
        half_length = int(math.hypot(x1 - x0, y1 - y0) / 2)
        angle = int(math.degrees(math.atan2(y1 - y0, x1 - x0)))
        limb = canvas.copy()
        cv2.fillConvexPoly(limb, cv2.ellipse2Poly(center, (half_length, stick), angle, 0, 360, 1), color)
        canvas = cv2.addWeighted(canvas, 1 - LIMB_OPACITY, limb, LIMB_OPACITY, 0)
    for point, color in zip(points, OPENPOSE_COLORS):
        if point is not None:
            cv2.circle(canvas, (int(point[0]), int(point[1])), joint, color, thickness=-1)
    return Image.fromarray(canvas)


def pose_map(image: Image.Image, estimator: LoadedModel, min_score: float = 0.3) -> Image.Image:
    """The OpenPose skeleton of the person in ``image``, found by a top-down VitPose estimator."""
    image = image.convert("RGB")
    width, height = image.size
    # VitPose finds one person's joints inside a given box. The studio has no person detector, so the box
    # is the whole picture: a keep-pose source is a photo of the one person whose pose is wanted.
    boxes = [[[0.0, 0.0, float(width), float(height)]]]
    model, processor = estimator.model, estimator.processor
    pixels = processor(image, boxes=boxes, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values=pixels.to(device=model.device, dtype=model.dtype))
    # The post-processing runs scipy filters on the heatmaps, which reject float16 arrays.
    outputs.heatmaps = outputs.heatmaps.float()
    pose = processor.post_process_pose_estimation(outputs, boxes=boxes)[0][0]
    points = coco_to_openpose(pose["keypoints"].numpy(), pose["scores"].numpy(), min_score)
    return draw_openpose(points, image.size)


def depth_map(image: Image.Image, estimator: LoadedModel) -> Image.Image:
    """The depth of ``image`` as a grey RGB image, near bright and far dark, stretched to the full 0..255.

    Depth Anything predicts relative inverse depth (larger is nearer), which is the depth ControlNets'
    convention as it is; a flat prediction, which has no range to stretch, gives mid-grey.
    """
    image = image.convert("RGB")
    width, height = image.size
    model, processor = estimator.model, estimator.processor
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values=pixels.to(device=model.device, dtype=model.dtype))
    # The bicubic resize and the stretch to 0..255 run in float32, so they add no half-precision rounding.
    outputs.predicted_depth = outputs.predicted_depth.float()
    depth = processor.post_process_depth_estimation(outputs, target_sizes=[(height, width)])[0]["predicted_depth"]
    depth = depth.cpu().numpy()
    low, high = float(depth.min()), float(depth.max())
    # Rounding in the bicubic resize can spread a constant prediction over a few ulps: that is still flat.
    if high - low <= 1e-6 * max(abs(low), abs(high)):
        grey = np.full(depth.shape, 128, dtype=np.uint8)
    else:
        grey = np.round((depth - low) / (high - low) * 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
