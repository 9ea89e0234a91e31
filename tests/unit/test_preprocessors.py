import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers.modeling_outputs import DepthEstimatorOutput

from engine.loader import LoadedModel
from engine.preprocessors import OPENPOSE_COLORS, coco_to_openpose, depth_map, draw_openpose, edge_map, pose_map

SIZE = (80, 56)  # not square, so a swapped width and height shows


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))


def check_map(image: Image.Image, size: tuple[int, int] = SIZE) -> np.ndarray:
    assert image.mode == "RGB" and image.size == size
    return np.asarray(image)


def test_edge_map_traces_a_rectangle_border():
    source = Image.new("RGB", (60, 40), (20, 40, 60))
    ImageDraw.Draw(source).rectangle((15, 10, 44, 29), fill=(230, 210, 190))  # columns 15..44, rows 10..29
    edges = check_map(edge_map(source), (60, 40))
    assert set(np.unique(edges)) == {0, 255} and (edges == edges[..., :1]).all()
    white = edges[..., 0] == 255
    # Every edge pixel is next to the border, on one side of it or the other...
    ring = np.zeros_like(white)
    ring[9:31, 14:46] = True
    ring[11:29, 16:44] = False
    assert not (white & ~ring).any()
    # ...and the border is traced all round, one pixel wide (away from the corners, which Canny rounds).
    assert (white[9:11, 17:43].sum(axis=0) == 1).all() and (white[29:31, 17:43].sum(axis=0) == 1).all()
    assert (white[12:28, 14:16].sum(axis=1) == 1).all() and (white[12:28, 44:46].sum(axis=1) == 1).all()


def test_coco_to_openpose_reorders_points_and_makes_the_neck():
    keypoints = np.array([(10.0 * i, 100.0 + i) for i in range(17)])
    scores = np.full(17, 0.9)
    scores[9] = 0.1  # the left wrist
    points = coco_to_openpose(keypoints, scores, min_score=0.3)
    assert len(points) == 18
    assert points[0] == (0.0, 100.0)  # nose
    assert points[2] == (60.0, 106.0) and points[5] == (50.0, 105.0)  # right and left shoulders
    assert points[1] == (55.0, 105.5)  # the neck, between the shoulders
    assert points[7] is None  # the left wrist scored too low
    assert points[14] == (20.0, 102.0) and points[17] == (30.0, 103.0)  # right eye, left ear


def test_coco_to_openpose_has_no_neck_without_both_shoulders():
    scores = np.full(17, 0.9)
    scores[6] = 0.29  # the right shoulder
    points = coco_to_openpose(np.zeros((17, 2)), scores, min_score=0.3)
    assert points[1] is None and points[2] is None and points[5] == (0.0, 0.0)


def test_draw_openpose_paints_limbs_and_joints_where_the_points_are():
    points = [None] * 18
    points[1], points[2], points[3] = (50.0, 50.0), (100.0, 50.0), None  # neck, right shoulder, no elbow
    canvas = check_map(draw_openpose(points, (200, 100)), (200, 100))
    red_at_60 = tuple(round(0.6 * c) for c in OPENPOSE_COLORS[0])  # limb 0: neck to right shoulder
    assert tuple(canvas[50, 75]) == red_at_60 and tuple(canvas[49, 75]) == red_at_60
    assert tuple(canvas[50, 50]) == OPENPOSE_COLORS[1] and tuple(canvas[50, 100]) == OPENPOSE_COLORS[2]
    # Nothing but the one limb and its two joints: all else is black.
    painted = canvas.any(axis=2)
    rows, cols = np.nonzero(painted)
    assert 45 <= rows.min() and rows.max() <= 55 and 45 <= cols.min() and cols.max() <= 105
    colours = {tuple(c) for c in canvas[painted]}
    assert colours == {red_at_60, OPENPOSE_COLORS[1], OPENPOSE_COLORS[2]}


def test_draw_openpose_without_points_is_black():
    assert not check_map(draw_openpose([None] * 18, SIZE)).any()


def test_pose_map_runs_the_loaded_estimator(tiny, cache, picture):
    estimator = cache.model(tiny, "pose")
    check_map(pose_map(picture, estimator))
    # No keypoint reaches an unreachable score: the map is all black.
    assert not check_map(pose_map(picture, estimator, min_score=math.inf)).any()


def test_depth_map_spans_the_grey_range(tiny, cache, picture):
    depth = check_map(depth_map(picture, cache.model(tiny, "depth")))
    assert (depth == depth[..., :1]).all()
    assert depth.min() == 0 and depth.max() == 255


def test_depth_of_a_constant_image_is_finite(tiny, cache):
    estimator, blank = cache.model(tiny, "depth"), Image.new("RGB", SIZE, (90, 90, 90))
    pixels = estimator.processor(images=blank, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        assert torch.isfinite(estimator.model(pixel_values=pixels).predicted_depth).all()
    depth = check_map(depth_map(blank, estimator))
    assert (depth == depth[..., :1]).all()


class FixedDepth(torch.nn.Module):
    """A depth estimator that predicts the given map (in the model's input size) whatever the image."""

    def __init__(self, depth: torch.Tensor):
        super().__init__()
        self.depth = depth
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device and a dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    def forward(self, pixel_values: torch.Tensor) -> DepthEstimatorOutput:
        return DepthEstimatorOutput(predicted_depth=self.depth.expand(len(pixel_values), -1, -1))


def test_depth_map_is_bright_where_near_and_grey_when_flat(tiny, cache, picture):
    processor = cache.model(tiny, "depth").processor
    # Depth Anything predicts inverse depth: larger is nearer. Here the bottom of the picture is nearest.
    nearer_down = torch.linspace(0.0, 5.0, 56).reshape(1, 56, 1).expand(1, 56, 84)
    depth = check_map(depth_map(picture, LoadedModel(FixedDepth(nearer_down), processor)))
    assert depth[-1].mean() > 250 and depth[0].mean() < 5
    flat = check_map(depth_map(picture, LoadedModel(FixedDepth(torch.full((1, 56, 84), 3.0)), processor)))
    assert (flat == 128).all()


def test_second_maps_load_nothing(tiny, cache, picture):
    pose_map(picture, cache.model(tiny, "pose"))
    depth_map(picture, cache.model(tiny, "depth"))
    loads = cache.loads
    pose_map(picture, cache.model(tiny, "pose"))
    depth_map(picture, cache.model(tiny, "depth"))
    assert cache.loads == loads


@pytest.mark.parametrize("role", ["controlnet_pose", "controlnet_depth"])
def test_keep_controlnets_fit_the_base_unet(tiny, cache, role):
    controlnet = cache.pipeline(tiny, role)
    assert controlnet.config.block_out_channels == cache.pipeline(tiny, "base").unet.config.block_out_channels
    # Built after the edge ControlNet, with weights of its own.
    edges = cache.pipeline(tiny, "controlnet")
    assert not torch.equal(controlnet.controlnet_cond_embedding.conv_in.weight, edges.controlnet_cond_embedding.conv_in.weight)
