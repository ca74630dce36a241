"""Mask generators: exact counts, shapes over time, bounds, guidance from real codec vectors, fallbacks."""

import math
import pickle
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.common.rng import sample_rng
from motionmae.io.video import Clip, read_frames, write_video
from motionmae.motion.masking import (
    MaskGenerator,
    guidance,
    make_mask,
    mgm_mask,
    num_masked,
    rectangle_mask,
    smm_track,
    token_magnitude,
)

GRID = (8, 14, 14)
STRATEGIES = [
    ("tube", {}),
    ("random", {}),
    ("cube", {}),
    ("smm", {}),
    ("smm", {"sparse": True}),
    ("mgm", {}),
    ("mgm", {"sparse": True}),
]


def _mask(kind, options, grid, ratio, seed):
    rng = np.random.default_rng(seed)
    magnitude = np.random.default_rng(seed + 1).random(grid) if kind == "mgm" else None
    return make_mask(kind, grid, ratio, rng, magnitude, **options)


# ---------------------------------------------------------------- counts and shapes


@pytest.mark.parametrize("kind,options", STRATEGIES)
@pytest.mark.parametrize("ratio", [0.4, 0.7, 0.75, 0.9])
@pytest.mark.parametrize("grid", [GRID, (3, 7, 5), (5, 9, 11), (1, 3, 3)])
def test_exact_count(kind, options, ratio, grid):
    t, h, w = grid
    exact = Fraction(str(ratio))  # 0.7 * 35 is 24.5, not the float 24.4999...
    expected = (
        t * math.floor(exact * h * w + Fraction(1, 2))
        if kind == "tube"
        else math.floor(exact * t * h * w + Fraction(1, 2))
    )
    assert num_masked(kind, grid, ratio) == expected
    for seed in range(5):
        mask = _mask(kind, options, grid, ratio, seed)
        assert mask.dtype == bool and mask.shape == (t * h * w,)
        assert mask.sum() == expected


@pytest.mark.parametrize("ratio", [0.4, 0.75, 0.9])
def test_non_tube_counts_are_round_ratio_n_at_default_grid(ratio):
    assert num_masked("mgm", GRID, ratio) == round(ratio * 1568)
    assert num_masked("tube", GRID, ratio) == 8 * round(ratio * 196)


def test_mgm_exact_without_any_motion():
    mask = mgm_mask(GRID, 0.75, np.random.default_rng(0), np.zeros(GRID))
    assert mask.sum() == 1176


def test_tube_is_identical_over_time():
    for seed in range(5):
        mask = _mask("tube", {}, (5, 9, 11), 0.75, seed).reshape(5, 9, 11)
        assert (mask == mask[:1]).all()


def test_dense_moving_masks_differ_over_time_and_per_slice_counts_balance():
    for kind in ("smm", "mgm"):
        mask = _mask(kind, {}, GRID, 0.75, 3).reshape(GRID)
        per_slice = mask.sum(axis=(1, 2))
        assert per_slice.max() - per_slice.min() <= 1
        assert not (mask == mask[:1]).all()


@pytest.mark.parametrize("kind,options", STRATEGIES)
def test_same_seed_same_mask(kind, options):
    a = _mask(kind, options, GRID, 0.75, 7)
    assert (a == _mask(kind, options, GRID, 0.75, 7)).all()
    assert any((a != _mask(kind, options, GRID, 0.75, s)).any() for s in range(8, 12))


def test_cube_masks_are_blocky():
    """Cube masks clump: a masked token's neighbours are masked far more often than the ratio."""
    mask = _mask("cube", {}, GRID, 0.4, 0).reshape(GRID)
    right_neighbour = mask[:, :, 1:][mask[:, :, :-1]]
    assert right_neighbour.mean() > 0.6


# ---------------------------------------------------------------- rectangles


def test_rectangle_exact_grow_and_shrink_follow_the_border():
    grid = (1, 10, 12)
    box = np.array([[3, 2, 7, 6]])  # x0, y0, x1, y1: 5 x 5
    inside = np.zeros((10, 12), bool)
    inside[2:7, 3:8] = True
    priority = np.zeros((1, 10, 12))
    priority[0, 4, 8] = 1.0  # the most moving token just right of the box
    priority[0, 2, 3] = -1.0  # the least moving corner
    rng = np.random.default_rng(0)
    same = rectangle_mask(box, grid, np.array([25]), rng, priority).reshape(10, 12)
    assert (same == inside).all()
    grown = rectangle_mask(box, grid, np.array([26]), rng, priority).reshape(10, 12)
    assert (grown & ~inside).sum() == 1 and grown[4, 8]
    shrunk = rectangle_mask(box, grid, np.array([24]), rng, priority).reshape(10, 12)
    assert (inside & ~shrunk).sum() == 1 and not shrunk[2, 3]
    much = rectangle_mask(box, grid, np.array([30]), rng, priority).reshape(10, 12)
    ring = np.zeros((10, 12), bool)
    ring[1:8, 2:9] = True
    assert (much <= ring).all() and much[inside].all()


@pytest.mark.parametrize("max_speed,max_jitter", [(1.0, 1), (2.0, 2), (0.5, 0)])
def test_smm_velocity_and_jitter_stay_within_bounds(max_speed, max_jitter):
    grid = (8, 14, 14)
    base = 12  # round(sqrt(0.75 * 196))
    for seed in range(50):
        centres, sizes = smm_track(grid, 0.75, np.random.default_rng(seed), max_speed, max_jitter)
        steps = np.abs(np.diff(centres, axis=0))
        assert (steps <= max_speed + 1e-9).all()
        assert ((centres >= 0) & (centres <= 14)).all()
        offsets = sizes - base
        assert (np.abs(offsets) <= max_jitter).all()
        assert (offsets.sum(axis=0) == 0).all()
    moved = [
        np.abs(np.diff(smm_track(grid, 0.75, np.random.default_rng(s), 1.0, 1)[0], axis=0)).max() for s in range(20)
    ]
    assert max(moved) > 0.5  # it does move


def test_mgm_rectangle_sits_on_the_peak():
    magnitude = np.zeros(GRID)
    peaks = [(4 + j // 2, 3 + j) for j in range(8)]  # (row, col) moving right and down
    for j, peak in enumerate(peaks):
        magnitude[(j, *peak)] = 5.0
    for seed in range(10):
        mask = mgm_mask(GRID, 0.3, np.random.default_rng(seed), magnitude).reshape(GRID)
        for j, (row, col) in enumerate(peaks):
            assert mask[j, row - 1 : row + 2, col - 1 : col + 2].all()
            centroid = np.argwhere(mask[j]).mean(axis=0) + 0.5
            assert np.hypot(*(centroid - (row + 0.5, col + 0.5))) < 1.5


def test_sparse_mgm_takes_the_top_magnitude_tokens():
    magnitude = np.random.default_rng(0).random(GRID)
    mask = mgm_mask(GRID, 0.5, np.random.default_rng(1), magnitude, sparse=True).reshape(8, -1)
    flat = magnitude.reshape(8, -1)
    for j in range(8):
        assert flat[j][mask[j]].min() > flat[j][~mask[j]].max()


# ---------------------------------------------------------------- guidance


def test_frames_without_vectors_are_left_out_not_read_as_zero():
    per_frame = np.zeros((4, 2, 2), np.float32)
    per_frame[1] = 4.0
    per_frame[3] = 2.0
    valid = np.array([False, True, False, False])  # frame 0 an I-frame; the second slice has none
    magnitude = token_magnitude(per_frame, valid, (2, 1, 1))
    assert magnitude[:, 0, 0].tolist() == [4.0, 4.0]  # mean over valid frames; empty slice borrows


def moving_object(frames=16, size=224, obj=48, start=(8, 150), step=(7, -3), seed=0):
    """RGB (T, H, W, 3) with a textured square moving `step` px/frame, and its token map (T/2, H/16, W/16)."""
    rng = np.random.default_rng(seed)
    background = (rng.integers(0, 256, (size, size, 3)) // 3).astype(np.uint8)
    texture = np.kron(rng.integers(0, 256, (obj // 8, obj // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    video = np.repeat(background[None], frames, axis=0)
    covered = np.zeros((frames, size, size), bool)
    for t in range(frames):
        x, y = start[0] + step[0] * t, start[1] + step[1] * t
        video[t, y : y + obj, x : x + obj] = texture
        covered[t, y : y + obj, x : x + obj] = True
    p = size // 16
    tokens = covered.reshape(frames // 2, 2, p, 16, p, 16).mean(axis=(1, 3, 5)) > 0.25
    return video, tokens


@pytest.fixture(scope="module")
def object_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("masking")
    video, tokens = moving_object()
    write_video(folder / "object.mp4", video)
    write_video(folder / "object_mjpeg.avi", video, codec="mjpeg", pix_fmt="yuvj420p")
    return folder / "object.mp4", folder / "object_mjpeg.avi", tokens


def _coverage(generator, clip, tokens, seeds=20, flow=None):
    covered, sources = [], set()
    for seed in range(seeds):
        mask, source = generator.for_clip(clip, np.random.default_rng(seed), flow)
        covered.append(mask.reshape(generator.grid)[tokens].mean())
        sources.add(source)
    return np.array(covered), sources


def test_mgm_covers_the_moving_object_from_codec_vectors(object_videos):
    h264, _, tokens = object_videos
    clip = read_frames(h264, np.arange(16), motion=True)
    assert clip.has_motion.sum() >= 12
    mgm, sources = _coverage(MaskGenerator("mgm", 0.75, GRID), clip, tokens)
    assert sources == {"mv"}
    assert mgm.min() >= 0.8
    tube, sources = _coverage(MaskGenerator("tube", 0.75, GRID), clip, tokens, seeds=200)
    assert sources == {"none"}
    assert abs(tube.mean() - 0.75) < 0.05
    assert mgm.mean() > tube.mean() + 0.15
    sparse, _ = _coverage(MaskGenerator("mgm", 0.75, GRID, options={"sparse": True}), clip, tokens)
    assert sparse.min() >= 0.8


def test_mjpeg_without_vectors_falls_back_and_reports_it(object_videos):
    _, mjpeg, tokens = object_videos
    clip = read_frames(mjpeg, np.arange(16), motion=True)
    assert not clip.has_motion.any()
    generator = MaskGenerator("mgm", 0.75, GRID)
    by_difference, sources = _coverage(generator, clip, tokens)
    assert sources == {"diff"}
    assert by_difference.min() >= 0.8
    flow = np.zeros((15, 224, 224, 2), np.float32)
    video, _ = moving_object()
    moved = np.abs(np.diff(video.astype(np.int16), axis=0)).sum(-1) > 0
    flow[moved] = (7.0, -3.0)
    by_flow, sources = _coverage(generator, clip, tokens, flow=flow)
    assert sources == {"flow"}
    assert by_flow.min() >= 0.8
    assert guidance(clip, GRID, flow, prefer="diff")[1] == "diff"


@pytest.mark.parametrize("first_field, first_slice", [(8, 1), (20, 3)])
def test_flow_guides_each_slice_by_the_raw_frames_it_covers(first_field, first_slice):
    # 8 input frames at stride 3: slice j covers raw frames 6j .. 6j + 6 (flow fields 6j .. 6j + 5).
    # A region starts moving at `first_field`, midway through a slice: the mask follows it from that slice on.
    frames, stride, size = 8, 3, 64
    grid = (4, 4, 4)
    flow = np.zeros((frames * stride, size, size, 2), np.float32)
    flow[first_field:, 32:48, 0:16] = (2.0, -1.0)  # token row 2, column 0
    clip = Clip(np.zeros((frames, size, size, 3), np.uint8), None, None, np.arange(frames) * stride)
    magnitude, source = guidance(clip, grid, flow, prefer="flow", stride=stride)
    assert source == "flow"
    assert magnitude[:first_slice].max() == 0
    for j in range(first_slice, 4):
        assert magnitude[j].argmax() == 2 * 4 + 0 and magnitude[j, 2, 0] > 0
    generator = MaskGenerator("mgm", 0.25, grid, prefer="flow")
    for seed in range(10):
        mask, _ = generator.for_clip(clip, np.random.default_rng(seed), flow, stride)
        assert mask.reshape(grid)[first_slice:, 2, 0].all()
    # a span that ends on the last input frame: that frame has no fields, slice 3 is guided by fields 18 .. 20
    magnitude, _ = guidance(clip, grid, flow[: (frames - 1) * stride], prefer="flow", stride=stride)
    moving = 21 - max(first_field, 18)
    assert magnitude[3, 2, 0] == pytest.approx(np.hypot(2, 1) * moving / 3)


# ---------------------------------------------------------------- data-loader side


class _MaskedSamples(torch.utils.data.Dataset):
    """Stand-in for a video data set: magnitudes are random, masks come from the worker."""

    def __init__(self, generator):
        self.generator = generator

    def __len__(self):
        return 6

    def __getitem__(self, index):
        rng = sample_rng(seed=1, index=index)
        magnitude = np.random.default_rng(index).random(GRID)
        return {"mask": torch.from_numpy(self.generator(rng, magnitude)), "mask_source": "mv"}


@pytest.mark.slow  # spawned loader workers
def test_masks_are_made_in_workers_and_travel_with_the_batch():
    generator = pickle.loads(pickle.dumps(MaskGenerator("mgm", grid=GRID)))
    assert generator == MaskGenerator("mgm", 0.75, GRID)
    # spawn: forking a process that has run decoder and OpenCV threads hung once in this suite
    loader = torch.utils.data.DataLoader(
        _MaskedSamples(generator), batch_size=3, num_workers=2, multiprocessing_context="spawn"
    )
    masks = torch.cat([batch["mask"] for batch in loader])
    assert masks.dtype == torch.bool and masks.shape == (6, 1568)
    assert (masks.sum(dim=1) == generator.num_masked).all()
    in_process = torch.stack([_MaskedSamples(generator)[i]["mask"] for i in range(6)])
    assert torch.equal(masks, in_process)


# ---------------------------------------------------------------- command line


def test_visualize_masks_command(object_videos, tmp_path, capsys):
    h264, _, _ = object_videos
    out = tmp_path / "masks.png"
    assert main(["visualize-masks", str(h264), "--mask", "mgm", "--stride", "1", "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 8 * 224 and image.shape[1] > 2 * 224
    assert "motion from mv" in capsys.readouterr().out


def test_visualize_masks_on_bikes_and_bad_options(bikes, tmp_path, capsys):
    out = tmp_path / "bikes.png"
    assert main(["visualize-masks", str(bikes), "--mask", "smm", "--sparse", "--out", str(out)]) == 0
    assert cv2.imread(str(out)).shape[1] > 2 * 512  # the whole 528 px wide frame, cropped to 33 patches
    assert main(["visualize-masks", str(bikes), "--mask", "tube", "--sparse"]) == 2
    assert main(["visualize-masks", str(bikes), "--start", "240"]) == 2
    assert "needs frame" in capsys.readouterr().err
