"""Pretraining data: list files, epoch sampling, joint augmentation, the raw-span dataset."""

import logging
import re

import cv2
import numpy as np
import pytest
import torch

from motionmae.common.lists import ListError, read_list
from motionmae.config import DataConfig
from motionmae.data.datasets import (
    CropBox,
    EpochSampler,
    FlowUnavailable,
    PretrainDataset,
    augment_flow,
    augment_frames,
    augment_vectors,
    multiscale_crop,
)
from motionmae.data.synthetic import make_dataset
from motionmae.io.cache import CacheParams, MotionCache
from motionmae.io.prepare import list_videos, prepare
from motionmae.io.video import write_video
from motionmae.models.vit import token_grid
from motionmae.motion.flow import video_flow
from motionmae.motion.masking import MaskGenerator
from motionmae.motion.targets import build_target

from conftest import translating_square


def smooth_texture(height, width, seed=0):
    """A smooth periodic RGB texture, float32 (H, W, 3) in 0-255 (low frequencies only)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(6):
        fy, fx = rng.integers(1, 4, 2)
        phase = rng.uniform(0, 2 * np.pi, 3)
        image += np.sin(2 * np.pi * (fx * x / width + fy * y / height)[..., None] + phase) * rng.uniform(10, 20, 3)
    return 128 + image


# ---------------------------------------------------------------- joint augmentation


def test_flip_negates_dx_and_the_targets_x_motion():
    video = translating_square(frames=11, height=64, width=64, step=(2, 1))
    flow = video_flow(video)
    box = CropBox(0, 0, 64, 64, 64, flip=True)
    frames_f, flow_f = augment_frames(video, box), augment_flow(flow, box)
    assert np.array_equal(frames_f, video[:, :, ::-1])
    assert np.allclose(flow_f, flow[:, :, ::-1] * np.array([-1, 1], np.float32))

    target = build_target("traj", traj_norm="none", shape=False)
    y, valid = target(torch.from_numpy(video)[None], torch.from_numpy(flow)[None], num_frames=2, stride=1)
    y_f, valid_f = target(torch.from_numpy(frames_f)[None], torch.from_numpy(flow_f)[None], num_frames=2, stride=1)

    def mirrored(x):  # (1, N, D) -> (tokens row, column, cell row, cell column, L, 2) with columns right to left
        return x.view(4, 4, 2, 2, 6, 2).flip(1).flip(3)

    assert torch.equal(mirrored(valid_f), valid.view(4, 4, 2, 2, 6, 2))
    moving = y.view(4, 4, 2, 2, 6, 2)[..., 0].abs().max()
    assert moving > 1.5  # the square's 2 px/frame shows up in the target
    assert torch.allclose(mirrored(y_f), y.view(4, 4, 2, 2, 6, 2) * torch.tensor([-1.0, 1.0]), atol=1e-4)


def test_crop_and_resize_scale_the_flow_vectors():
    texture = smooth_texture(64, 96)
    step = (3, -2)
    video = np.stack([np.roll(texture, (step[1] * t, step[0] * t), axis=(0, 1)) for t in range(4)]).clip(0, 255)
    flow = np.zeros((3, 64, 96, 2), np.float32)
    flow[...] = step
    box = CropBox(24, 8, 48, 48, 32, flip=False)
    frames_a = augment_frames(video.astype(np.float32), box)
    flow_a = augment_flow(flow, box)
    assert frames_a.shape == (4, 32, 32, 3) and flow_a.shape == (3, 32, 32, 2)
    assert np.allclose(flow_a, np.array(step, np.float32) * 32 / 48)

    # The scaled flow carries resized frame t to t + 1: warping t + 1 back by it gives frame t.
    grid = np.mgrid[0:32, 0:32][::-1].astype(np.float32).transpose(1, 2, 0)  # (x, y) per pixel

    def warp_error(vectors):
        map_xy = grid + vectors
        back = cv2.remap(frames_a[1], map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR)
        return np.abs(back - frames_a[0])[4:-4, 4:-4].mean()

    assert warp_error(flow_a[0]) < 0.5
    assert warp_error(flow[0, :32, :32]) > 4 * warp_error(flow_a[0])  # unscaled vectors do not fit


def test_motion_vectors_get_the_same_crop_and_flip_as_the_flow():
    vectors = np.zeros((2, 8, 12, 2), np.float32)  # an 8x8-block field of a 64x96 frame
    vectors[:, 2:6, 3:5] = (5.0, -3.0)  # a moving region: pixels x 24..39, y 16..47
    dense = np.repeat(np.repeat(vectors, 8, axis=1), 8, axis=2)  # the same field per pixel
    box = CropBox(16, 8, 48, 48, 48, flip=True)
    blocks, pixels = augment_vectors(vectors, box), augment_flow(dense, box)
    assert blocks.shape == (2, 6, 6, 2)
    assert np.array_equal(blocks, pixels[:, 4::8, 4::8])  # the block grid follows the frames' crop and flip
    # Crop x 16..63 flipped: the region is 8..23 px from the crop's right edge -> blocks 3 and 4, dx negated.
    assert np.array_equal(np.nonzero(blocks[0].any(-1))[1], [3, 4] * 4)
    assert np.array_equal(blocks[0, 1, 3], [-5.0, -3.0])

    resized = augment_vectors(vectors, CropBox(16, 8, 48, 48, 24, flip=False))
    assert resized.shape == (2, 3, 3, 2)
    moving = resized[resized.any(-1)]
    assert len(moving) > 0 and np.allclose(moving, np.array([5.0, -3.0]) * 24 / 48)  # scaled like the flow


def test_multiscale_crop_sides_come_from_the_scales():
    scales = [1.0, 0.875, 0.75, 0.66]
    sides = [int(72 * s) for s in scales]  # the short side of 72 x 128 frames: 72, 63, 54, 47
    allowed = {(sides[i], sides[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    rng = np.random.default_rng(0)
    boxes = [multiscale_crop(72, 128, 32, scales, True, rng) for _ in range(400)]
    assert {(b.w, b.h) for b in boxes} == allowed
    for b in boxes:
        dx, dy = 128 - b.w, 72 - b.h
        assert (b.x, b.y) in {(0, 0), (dx, 0), (0, dy), (dx, dy), (dx // 2, dy // 2)} and b.size == 32
    assert 0.35 < np.mean([b.flip for b in boxes]) < 0.65
    assert not any(multiscale_crop(72, 128, 32, scales, False, rng).flip for _ in range(50))
    assert multiscale_crop(72, 128, 32, scales, True, rng, train=False) == CropBox(28, 0, 72, 72, 32, False)


# ---------------------------------------------------------------- list files


def test_read_list_of_a_list_file_and_of_a_folder(tmp_path):
    (tmp_path / "videos" / "a").mkdir(parents=True)
    for name in ("videos/a/one.mp4", "videos/two.avi", "videos/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "train.csv"
    listing.write_text("# path label\nvideos/a/one.mp4 3\n\nvideos/two.avi\n")
    items = read_list(listing)
    assert [(i.path, i.label, i.key) for i in items] == [
        (tmp_path / "videos/a/one.mp4", 3, "videos/a/one.mp4"),
        (tmp_path / "videos/two.avi", -1, "videos/two.avi"),
    ]
    folder = read_list(tmp_path / "videos")
    assert [(i.key, i.label) for i in folder] == [("a/one.mp4", -1), ("two.avi", -1)]  # no .txt


def test_read_list_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(ListError, match="missing.csv: no such list file or folder"):
        read_list(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.mp4 1\nb.mp4 cat\n")
    with pytest.raises(ListError, match=r"bad.csv:2: expected 'path \[label\]'"):
        read_list(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("# nothing\n")
    with pytest.raises(ListError, match="empty.csv: the list names no videos"):
        read_list(empty)
    (tmp_path / "novideos").mkdir()
    with pytest.raises(ListError, match="novideos: no videos found"):
        read_list(tmp_path / "novideos")


# ---------------------------------------------------------------- epoch sampler


def batches(sampler, epoch, skip=0):
    sampler.set_epoch(epoch, skip_batches=skip)
    return list(sampler)


def test_epoch_sampler_is_deterministic_per_seed_and_epoch():
    a, b = EpochSampler(50, 4, seed=3), EpochSampler(50, 4, seed=3)
    assert batches(a, 0) == batches(b, 0)
    assert len(a) == 12 and len(batches(a, 0)) == 12  # the incomplete last batch is dropped
    assert all(e == 1 for batch in batches(a, 1) for e, _ in batch)
    assert [i for _, i in batches(a, 0)[0]] != [i for _, i in batches(a, 1)[0]]
    assert batches(a, 0) != batches(EpochSampler(50, 4, seed=4), 0)
    indices = [i for batch in batches(a, 2) for _, i in batch]
    assert len(set(indices)) == len(indices) == 48
    with pytest.raises(ListError, match="fewer than one global batch"):
        EpochSampler(7, 4, world=2)


def test_rank_batches_together_are_the_one_process_global_batch():
    single = batches(EpochSampler(50, 8, seed=1), 5)
    ranks = [batches(EpochSampler(50, 4, seed=1, rank=r, world=2), 5) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 6
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch)
        assert not set(ranks[0][step]) & set(ranks[1][step])


def test_skip_batches_resumes_mid_epoch():
    sampler = EpochSampler(50, 4, seed=0, rank=1, world=2)
    full = batches(sampler, 3)
    assert batches(sampler, 3, skip=4) == full[4:]
    assert batches(sampler, 4) != full  # set_epoch without skip starts the next epoch from its beginning


# ---------------------------------------------------------------- pretraining dataset


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    """One video per class (64 px, 24 frames) and a real motion cache of the training list."""
    root = tmp_path_factory.mktemp("pretrain_data")
    data = make_dataset(root / "data", videos_per_class=1, size=64, frames=24, progress=False)
    report = prepare(
        list_videos(data / "train.csv"), MotionCache(root / "cache", CacheParams(short_side=64)), progress=False
    )
    assert report.ok, report.failed
    return data, root / "cache"


def dataset(listing, cache, mask="mgm", **options):
    data = DataConfig(train=str(listing), cache=str(cache), short_side=64, frames=4, stride=2, size=32, **options)
    target = build_target("traj")
    masks = MaskGenerator(mask, 0.5, token_grid(4, 32, 2, 16))
    return PretrainDataset(read_list(listing), data, target.raw_span(4, 2), masks, seed=7)


def test_pretrain_dataset_gives_raw_spans_with_flow_and_masks(synthetic_set):
    data, cache = synthetic_set
    ds = dataset(data / "train.csv", cache)
    assert len(ds) == 12
    sample = ds[(0, 1)]  # move_right
    span = build_target("traj").raw_span(4, 2)
    assert sample["frames"].shape == (span, 32, 32, 3) and sample["frames"].dtype == torch.uint8
    assert sample["flow"].shape == (span - 1, 32, 32, 2) and sample["flow"].dtype == torch.float32
    assert sample["mask"].shape == (8,) and sample["mask"].dtype == torch.bool and sample["mask"].sum() == 4
    assert sample["label"].item() == 1 and sample["mask_source"] == "mv"
    assert sample["flow"].abs().max() > 0.5  # the cached flow of a moving object
    again = ds[(0, 1)]
    assert all(torch.equal(sample[k], again[k]) for k in ("frames", "flow", "mask"))
    other = ds[(1, 1)]
    assert not all(torch.equal(sample[k], other[k]) for k in ("frames", "flow", "mask"))


def test_in_memory_samples_match_those_read_from_disk(synthetic_set):
    data, cache = synthetic_set
    disk, memory = dataset(data / "train.csv", cache), dataset(data / "train.csv", cache, in_memory=True)
    for key in [(0, 1), (3, 1), (2, 7)]:  # the second read of video 1 comes from RAM
        a, b = disk[key], memory[key]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["mask"], b["mask"])
        assert a["mask_source"] == b["mask_source"] == "mv"
        # flow: resampled from the stored grid at frame size, then into the box (disk: once, into the box)
        assert (a["flow"] - b["flow"]).abs().mean() < 0.05 * a["flow"].abs().mean() + 1e-3
    assert len(memory.videos) == 2 and len(memory.span_flow.kept) == 2


def test_dataset_samples_feed_the_target_builder(synthetic_set):
    data, cache = synthetic_set
    ds = dataset(data / "train.csv", cache, mask="tube")
    batch = [ds[(0, i)] for i in range(4)]
    frames = torch.stack([s["frames"] for s in batch])
    flow = torch.stack([s["flow"] for s in batch])
    y, valid = build_target("traj")(frames, flow, num_frames=4, stride=2)
    assert y.shape == (4, 8, 264) and valid.any() and torch.isfinite(y).all()


def test_shuffled_frames_are_the_same_span_in_another_order_with_their_own_flow(synthetic_set):
    data, cache = synthetic_set
    plain = dataset(data / "train.csv", cache)[(0, 1)]
    shuffled = dataset(data / "train.csv", cache, shuffle_frames=True)[(0, 1)]  # same start and crop
    frames, mixed = plain["frames"].flatten(1), shuffled["frames"].flatten(1)
    order = [next(i for i in range(len(frames)) if torch.equal(frames[i], f)) for f in mixed]
    assert sorted(order) == list(range(len(frames))) and order != sorted(order)
    assert shuffled["mask_source"] == "flow"  # no codec vectors: they describe the true order
    # its flow follows the shuffled frames (flow of the crops themselves, at 32 px, as a coarse
    # reference: on the weakly textured background DIS at 32 px spreads the objects' motion)
    expected = video_flow(shuffled["frames"].numpy()).ravel()
    assert shuffled["flow"].shape == plain["flow"].shape
    assert np.corrcoef(shuffled["flow"].numpy().ravel(), expected)[0, 1] > 0.2
    assert abs(np.corrcoef(plain["flow"].numpy().ravel(), expected)[0, 1]) < 0.1


@pytest.fixture(scope="module")
def uncached_list(synthetic_set):
    """A list beside the set's lists: a square moving 2 px/frame (not in the cache), then a cached video."""
    data, _ = synthetic_set
    (data / "extra").mkdir(exist_ok=True)
    write_video(data / "extra" / "square.mp4", translating_square(frames=24, height=64, width=96))
    listing = data / "uncached.csv"
    listing.write_text("extra/square.mp4 0\nvideos/move_right/move_right_00000.mp4 1\n")
    return listing


def test_a_video_without_cache_entry_is_named(synthetic_set, uncached_list, caplog):
    ds = dataset(uncached_list, synthetic_set[1])  # left out with one warning naming it
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert re.search(r"1 of 2 videos are not in the motion cache .* left out: .*square\.mp4", warning.getMessage())
    assert len(ds) == 1 and ds[(0, 0)]["label"].item() == 1
    alone = uncached_list.with_name("alone.csv")
    alone.write_text("extra/square.mp4 0\n")
    with pytest.raises(FlowUnavailable, match=r"none of the 1 videos.*square\.mp4.*motionmae prepare.*flow_on_the_fly"):
        dataset(alone, synthetic_set[1])


def test_flow_on_the_fly_computes_real_flow_for_an_uncached_video(synthetic_set, uncached_list, capsys, caplog):
    ds = dataset(uncached_list, synthetic_set[1], flow_on_the_fly=True)
    sample = ds[(0, 0)]
    assert capsys.readouterr().err == "" and not caplog.records and sample["label"].item() == 0
    speed = sample["flow"].norm(dim=-1)
    assert speed.max() > 0.5 and speed.mean() > 0.02  # the square moves (2 px/frame, scaled by the crop)


def test_a_bad_video_in_the_list_is_skipped_with_a_warning(synthetic_set, caplog):
    data, cache = synthetic_set
    (data / "extra").mkdir(exist_ok=True)
    (data / "extra" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    listing = data / "broken.csv"
    listing.write_text("extra/broken.mp4 5\nvideos/move_up/move_up_00000.mp4 2\n")
    ds = dataset(listing, cache, flow_on_the_fly=True)  # so the cache check does not leave it out first
    sample = ds[(0, 0)]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("skipping") and "broken.mp4" in warning.getMessage()
    assert sample["label"].item() == 2 and sample["frames"].shape[1:] == (32, 32, 3)


def test_flow_guidance_loads_flow_for_a_pixel_target(synthetic_set):
    from motionmae.config import load_config
    from motionmae.train.pretrain import build_dataset

    data, cache = synthetic_set
    overrides = [
        f"data.train={data / 'train.csv'}",
        f"data.cache={cache}",
        "data.short_side=64",
        "data.size=32",
        "data.frames=4",
        "data.stride=2",
        "mask.kind=mgm",
        "mask.ratio=0.5",
    ]
    for guidance, source, flow_fields in (("flow", "flow", 6), ("mv", "mv", 0)):
        config = load_config("videomae", overrides + [f"mask.guidance={guidance}"])
        target = build_target("pixel")
        sample = build_dataset(config, target)[(0, 1)]  # move_right
        assert sample["mask_source"] == source and sample["flow"].shape[:1] == (flow_fields,)
    assert sample["flow"].numel() == 0 and not target.needs_flow
