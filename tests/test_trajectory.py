import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motionmae.data import synthetic
from motionmae.motion.targets import build_target
from motionmae.motion.trajectory import flow_at, inside, median3x3, raw_span, sample, sample_maps, start_points, track


def test_median3x3_matches_sorting_all_nine():
    x = torch.randn(3, 2, 17, 23, generator=torch.Generator().manual_seed(0))
    windows = F.pad(x, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1)
    assert torch.equal(median3x3(x), windows.reshape(3, 2, 17, 23, 9).median(-1).values)


@pytest.mark.parametrize("lookup", ["bilinear", "nearest"])
def test_flow_at_filters_only_where_it_reads(lookup):
    g = torch.Generator().manual_seed(0)
    flow = torch.randn(2, 3, 17, 23, 2, generator=g) * 10
    points = torch.rand(2, 2, 50, 2, generator=g) * torch.tensor([26.0, 20.0]) - 1.5  # some beyond the border
    frame = torch.tensor([0, 2])
    read = flow_at(flow, frame, points, lookup, median=True, max_flow=8.0)
    for s in range(2):
        dense = median3x3(flow[:, frame[s]].permute(0, 3, 1, 2).clamp(-8, 8))
        assert torch.allclose(read[:, s], sample(dense, points[:, s], lookup), atol=1e-5)
    plain = flow_at(flow, frame, points, lookup, median=False)
    assert torch.allclose(plain[:, 1], sample(flow[:, 2].permute(0, 3, 1, 2), points[:, 1], lookup), atol=1e-5)


def test_median3x3_removes_an_outlier():
    flow = torch.ones(1, 2, 8, 8)
    flow[0, :, 4, 4] = 20
    assert torch.equal(median3x3(flow), torch.ones(1, 2, 8, 8))


def test_raw_span():
    assert raw_span(16, 2, 6) == 14 * 2 + 6 + 1  # last slice starts at raw 28, needs flow 28..33 -> frame 34
    assert raw_span(16, 4, 4) == 14 * 4 + 4 + 1 == (16 - 1) * 4 + 1  # here the inputs reach as far
    assert raw_span(16, 4, 2) == (16 - 1) * 4 + 1  # the inputs reach further than the trajectories
    assert raw_span(16, 3, 6, interpolate=False) == 14 * 3 + 6 * 3 + 1
    assert raw_span(16, 1, 6, interpolate=False) == raw_span(16, 1, 6)


def test_start_points_are_cell_centres_grouped_by_token():
    points = start_points(32, 48).view(2 * 3, 4, 2)
    assert points[0].tolist() == [[3.5, 3.5], [11.5, 3.5], [3.5, 11.5], [11.5, 11.5]]
    assert points[1, 0].tolist() == [19.5, 3.5]  # next token to the right
    assert points[3, 0].tolist() == [3.5, 19.5]  # first token of the second row


def rotation_flow(height, width, degrees, centre):
    """Exact flow (1, 2, H, W) of a rotation by `degrees` about `centre` (x, y)."""
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    a = math.radians(degrees)
    dx, dy = x - centre[0], y - centre[1]
    moved_x = centre[0] + math.cos(a) * dx - math.sin(a) * dy
    moved_y = centre[1] + math.sin(a) * dx + math.cos(a) * dy
    return torch.stack((moved_x - x, moved_y - y))[None].float()


def test_tracking_an_analytic_rotation_is_exact():
    # Bilinear reads of an affine field are exact, so tracking follows the true circles.
    field = rotation_flow(64, 64, 5.0, (32.0, 30.0)).permute(0, 2, 3, 1)  # (1, H, W, 2)
    points = torch.tensor([[[40.0, 30.0], [20.5, 41.25], [32.0, 30.0]]])
    positions = track(field[:, None].expand(1, 6, 64, 64, 2), torch.tensor([0]), 6, points[None])[0]
    truth = []
    for step in range(7):
        a = math.radians(5.0 * step)
        d = points[0] - torch.tensor([32.0, 30.0])
        truth.append(
            torch.stack(
                (
                    32 + math.cos(a) * d[:, 0] - math.sin(a) * d[:, 1],
                    30 + math.sin(a) * d[:, 0] + math.cos(a) * d[:, 1],
                ),
                -1,
            )
        )
    assert torch.allclose(positions[0], torch.stack(truth), atol=1e-3)


def test_nearest_lookup_reads_the_nearest_pixel():
    field = torch.zeros(1, 2, 8, 8)
    field[0, 0, 3, 5] = 1.0  # dx = 1 at pixel (x=5, y=3)
    points = torch.tensor([[[5.4, 2.6], [4.6, 3.4], [5.6, 3.0]]])
    assert sample(field, points, "nearest")[0, :, 0].tolist() == [1.0, 1.0, 0.0]
    assert sample(field, points, "bilinear")[0, :, 0].tolist() == pytest.approx([0.6 * 0.6, 0.6 * 0.6, 0.4])


def test_trajectory_leaving_the_frame_is_invalid():
    flow = torch.zeros(1, 6, 16, 32, 2)
    flow[..., 0] = 3.0  # everything moves 3 px right per frame
    points = torch.tensor([[[[3.5, 3.5], [27.5, 3.5], [11.5, 11.5]]]])
    positions = track(flow, torch.tensor([0]), 6, points)
    assert inside(positions, 16, 32)[0, 0].tolist() == [True, False, True]  # 27.5 + 18 > 31.5


def dis_flow(video: np.ndarray) -> np.ndarray:
    """OpenCV DIS flow (T-1, H, W, 2) between consecutive RGB frames, at full resolution."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in video]
    return np.stack([dis.calc(a, b, None) for a, b in zip(gray, gray[1:])])


def moving_square(frames, velocity, origin=(40.0, 20.0), height=64, width=96, side=32, seed=0) -> np.ndarray:
    """RGB uint8 (T, H, W, 3): a textured square moving `velocity` px/frame (sub-pixel, resampled) over a static
    background."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3)).astype(np.float32), (0, 0), 1.0) * 0.5
    texture = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3)).astype(np.float32), (0, 0), 1.0)
    video = []
    for t in range(frames):
        warp = np.float32([[1, 0, origin[0] + velocity[0] * t], [0, 1, origin[1] + velocity[1] * t]])
        layer = cv2.warpAffine(texture, warp, (width, height), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(np.ones((side, side), np.float32), warp, (width, height), flags=cv2.INTER_LINEAR)
        video.append(background * (1 - alpha[..., None]) + layer)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("velocity", [(1.5, -0.75), (-2.5, 0.5), (0.3, 1.7)])
def test_tracking_dis_flow_of_rendered_frames_stays_within_a_pixel(velocity):
    # End to end from pixels: rendered frames -> DIS flow -> 3x3 median -> tracked over L = 6.
    video = moving_square(7, velocity)
    flow = torch.from_numpy(dis_flow(video))[None]
    ys, xs = np.mgrid[26:46:2, 46:66:2]  # inside the square (x 40..72, y 20..52) at frame 0
    points = torch.tensor(np.stack([xs.ravel(), ys.ravel()], 1), dtype=torch.float32)
    positions = track(flow, torch.tensor([0]), 6, points[None, None])[0, 0]
    truth = points + torch.arange(7.0)[:, None, None] * torch.tensor(velocity)
    assert (positions - truth).norm(dim=-1).max() < 1.0


def object_map(pose) -> np.ndarray:
    """(3, 3) object-local -> image map of a synthetic object pose (cx, cy, angle, radius), fixed camera."""
    cx, cy, angle, radius = (float(v) for v in pose)
    return np.array(
        [
            [radius * math.cos(angle), -radius * math.sin(angle), cx],
            [radius * math.sin(angle), radius * math.cos(angle), cy],
            [0, 0, 1],
        ]
    )


@pytest.mark.parametrize("label", ["move_right", "rotate_clockwise", "grow", "approach"])
def test_tracking_true_flow_of_synthetic_videos_follows_object_points(label):
    # motionmae.data.synthetic's ground truth: every point of the primary object follows its pose exactly.
    video, truth = synthetic.render_video(label, index=0, size=96, frames=24)
    start = 4
    flow = torch.from_numpy(synthetic.true_flow(truth))[None]
    interior = cv2.erode((truth["mask"][start] == 1).astype(np.uint8), np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(interior)
    assert len(xs) > 10
    points = np.stack([xs, ys, np.ones_like(xs)], 1).astype(np.float64)
    positions = track(flow, torch.tensor([start]), 6, torch.tensor(points[None, None, :, :2], dtype=torch.float32))[
        0, 0
    ]
    back = np.linalg.inv(object_map(truth["pose"][start, 0]))
    expected = np.stack([(object_map(truth["pose"][start + k, 0]) @ back @ points.T).T[:, :2] for k in range(7)])
    assert (positions - torch.tensor(expected, dtype=torch.float32)).norm(dim=-1).max() < 0.05


def test_target_position_part_matches_true_motion():
    # The traj target's position part (no norm) from DIS flow equals the square's motion, token by token.
    velocity = (1.5, -0.75)
    target = build_target("traj", traj_norm="none", shape=False)
    span = target.raw_span(2, 1)
    video = moving_square(span, velocity)
    flow = torch.from_numpy(dis_flow(video))[None]
    y, valid = target(torch.from_numpy(video)[None], flow, num_frames=2, stride=1)
    # Token (row 2, column 3) covers x 48..63, y 32..47: inside the square (x 40..72, y 20..52) throughout.
    token = 2 * 6 + 3
    assert valid[0, token].all()
    steps = y[0, token].view(4, 6, 2)
    assert (steps - torch.tensor(velocity)).abs().max() < 0.5
    positions = torch.cat((torch.zeros(4, 1, 2), steps.cumsum(1)), 1)
    assert (positions - torch.arange(7.0)[:, None] * torch.tensor(velocity)).norm(dim=-1).max() < 1.0
    # Tokens of the static background barely move.
    assert y[0, 0].abs().max() < 0.5


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("spacing, offset", [(1, 0.0), (2, 3.5), (4, 3.5)])
def test_sample_maps_reads_like_sample_on_each_groups_map(mode, spacing, offset):
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 7, 9, 4, generator=g)
    which = torch.tensor([3, 0, 3, 4, 1, 2])
    points = torch.rand(6, 50, 2, generator=g) * 40 - 5  # some outside: border values
    expected = sample(maps[which].permute(0, 3, 1, 2), (points - offset) / spacing, mode)
    assert torch.allclose(sample_maps(maps, which, points, mode, offset, spacing), expected, atol=1e-5)
