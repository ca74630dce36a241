"""Shot cuts: `prepare` finds them at the right pair and not in a fast pan; trajectories and flow
targets across a cut are invalid; MGM guidance does not follow a cut."""

import json

import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.common.lists import read_list
from motionmae.config import DataConfig
from motionmae.data.datasets import PretrainDataset, open_cache
from motionmae.io.cache import CacheError, CacheParams, MotionCache
from motionmae.io.prepare import prepare
from motionmae.io.video import VideoReader, read_frames, shipped_videos, write_video
from motionmae.models.vit import token_grid
from motionmae.motion.cuts import CutParams, find_cuts, shot_ids, warp_residual
from motionmae.motion.flow import FlowEstimator, to_gray, video_flow
from motionmae.motion.masking import MaskGenerator, guidance
from motionmae.motion.targets import build_target

SIZE = 64
NO_SCENECUT = {"x264-params": "scenecut=0"}  # the encoder puts no I-frame at the cut: a P/B frame, mostly intra


def panning_shot(label: int, index: int, frames: int, speed: int = 3) -> np.ndarray:
    """RGB uint8 (T, SIZE, SIZE, 3): a window panning `speed` px/frame across a still of a real video
    (frame 25 * label + index of bikes.mp4 at short side 100: different shots for different labels)."""
    bikes = next(v for v in shipped_videos() if v.name == "bikes.mp4")
    still = read_frames(bikes, [25 * label + index], short_side=100).frames[0]
    assert SIZE + speed * (frames - 1) <= still.shape[1]
    return np.stack([still[:SIZE, speed * t : speed * t + SIZE] for t in range(frames)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A fast pan cut after frame 19 into another scene, a cut-free fast pan; their motion cache."""
    root = tmp_path_factory.mktemp("cuts")
    write_video(root / "cut.mp4", np.concatenate([panning_shot(1, 0, 20), panning_shot(4, 1, 16)]), options=NO_SCENECUT)
    write_video(root / "pan.mp4", panning_shot(7, 2, 36))
    (root / "train.csv").write_text("cut.mp4 0\npan.mp4 0\n")
    cache = MotionCache(root / "cache", CacheParams(short_side=128))
    report = prepare([("cut.mp4", root / "cut.mp4"), ("pan.mp4", root / "pan.mp4")], cache, progress=False)
    assert report.ok, report.failed
    return root, cache


# ---------------------------------------------------------------- detection


def test_prepare_finds_the_inserted_cut_at_its_pair_and_none_in_a_fast_pan(videos):
    _, cache = videos
    cut, pan = cache.info("cut.mp4"), cache.info("pan.mp4")
    assert np.flatnonzero(cut.cuts).tolist() == [19]
    assert not pan.cuts.any()
    assert len(cut.cut_scores) == cut.num_flows and cut.cut_scores[19] > 4 * np.median(cut.cut_scores)
    assert cache.cuts("cut.mp4", 18, 22).tolist() == [False, True, False, False]
    assert cache.cuts("cut.mp4", 33, 38).tolist() == [False] * 5  # False past the last pair


@pytest.mark.parametrize("name, cuts", [("bikes.mp4", [29, 75, 136, 186, 241]), ("bigbuckbunny.mp4", [])])
def test_real_cuts_are_found_and_a_single_shot_has_none(name, cuts, bikes, tmp_path):
    """bikes.mp4 has 5 hard cuts (after frames 29, 75, 136, 186, 241, seen on its frames); bigbuckbunny one shot."""
    path = bikes.parent / name
    cache = MotionCache(tmp_path, CacheParams())
    assert prepare([(name, path)], cache, progress=False).ok
    assert np.flatnonzero(cache.info(name).cuts).tolist() == cuts


def test_find_cuts_takes_isolated_spikes_only():
    rng = np.random.default_rng(0)
    scores = rng.uniform(1.5, 2.5, 60)
    spike = scores.copy()
    spike[[0, 30]] = 20.0
    assert np.flatnonzero(find_cuts(spike)).tolist() == [0, 30]
    burst = scores.copy()
    burst[30:33] = 20.0  # several pairs of fast motion, not one cut
    assert not find_cuts(burst).any()
    assert not find_cuts(scores * 10).any()  # a shot whose residual is high throughout
    faint = scores / 4
    faint[30] = 2.9  # a spike below the floor (residual of noise on a still scene)
    assert not find_cuts(faint).any()
    assert not find_cuts(spike, CutParams(ratio=0)).any()
    assert shot_ids(find_cuts(spike)).tolist() == [0] + [1] * 30 + [2] * 30


def test_warp_residual_is_small_for_motion_and_brightness_and_large_across_scenes():
    a, b = (to_gray(panning_shot(label, index, 8, speed=4))[3:5] for label, index in ((7, 2), (1, 0)))
    estimator = FlowEstimator()
    assert warp_residual(a[0], a[0], np.zeros((SIZE, SIZE, 2), np.float32)) == 0.0
    moved = warp_residual(a[0], a[1], estimator(a[0], a[1]))
    still = warp_residual(a[0], a[1], np.zeros((SIZE, SIZE, 2), np.float32))  # the pan not followed
    brighter = (a[1] * 1.3).clip(0, 255).astype(np.uint8)
    lit = warp_residual(a[0], brighter, estimator(a[0], brighter))
    assert moved < still / 3 and lit < still / 3
    assert warp_residual(a[0], b[0], estimator(a[0], b[0])) > 3 * max(moved, lit)


def test_an_older_cache_folder_gives_a_clear_message_and_is_not_used(videos, tmp_path):
    _, cache = videos
    old = tmp_path / "flow-0123456789"
    old.mkdir()
    values = json.loads((cache.dir / "params.json").read_text())
    del values["version"], values["cuts"]
    (old / "params.json").write_text(json.dumps(values))
    with pytest.raises(CacheError, match="format 2 or older.*run `motionmae prepare` again"):
        MotionCache.from_dir(old)
    fresh = open_cache(DataConfig(cache=str(tmp_path), short_side=values["short_side"]))
    assert fresh.dir != old and not fresh.dir.exists()  # `prepare` into this root makes a new folder


# ---------------------------------------------------------------- targets


def test_a_trajectory_that_crosses_the_cut_is_invalid_and_ones_before_it_stay_valid(videos):
    root, cache = videos
    data = DataConfig(
        train=str(root / "train.csv"),
        cache=str(cache.dir),
        short_side=128,
        frames=8,
        stride=2,
        size=64,
        scales=(1.0,),
        flip=False,
    )
    target = build_target("traj")
    span = target.raw_span(8, 2)  # 19 raw frames; slice j's trajectories read fields 4j .. 4j + 5
    masks = MaskGenerator("tube", 0.5, token_grid(8, 64, 2, 16))
    ds = PretrainDataset(read_list(root / "train.csv"), data, span, masks)
    sample, _ = ds.sample(ds.items[0], np.random.default_rng(0), start=8)  # the cut: span pair 19 - 8 = 11
    assert np.flatnonzero(sample["cuts"].numpy()).tolist() == [11]
    frames, flow, cuts = sample["frames"][None], sample["flow"][None], sample["cuts"][None]
    _, valid = target(frames, flow, 8, 2, cuts)
    _, unaware = target(frames, flow, 8, 2)
    valid, unaware = valid.view(4, 16, -1), unaware.view(4, 16, -1)  # (slice, token, element)
    assert not valid[2].any() and unaware[2].any()  # slice 2 reads fields 8..13, across the cut
    for j in (0, 1, 3):  # before the cut (fields 0..9) and after it (12..17)
        assert torch.equal(valid[j], unaware[j]) and valid[j].any()

    # MGM on a pixel target reads no flow, but still the cuts
    mgm = MaskGenerator("mgm", 0.5, token_grid(8, 64, 2, 16))
    pixels = PretrainDataset(read_list(root / "train.csv"), data, span, mgm, needs_flow=False)
    assert torch.equal(pixels.sample(pixels.items[0], np.random.default_rng(0), start=8)[0]["cuts"], sample["cuts"])

    hof = build_target("hof")  # the flow of input frame i is field 2i: field 11 is no input's
    assert hof(frames, flow, 8, 2, cuts)[1].all()
    moved = torch.zeros_like(cuts)
    moved[0, 10] = True  # input frame 5 (slice 2)
    _, valid = hof(frames, flow, 8, 2, moved)
    assert valid.view(4, -1).all(1).tolist() == [True, True, False, True]


# ---------------------------------------------------------------- MGM guidance


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory):
    """16 frames (64 px): a textured square moving 2 px/frame along the top, over a dark background
    whose bottom-right corner turns from black to white at a cut after frame 8; vectors, flow, cut flags."""
    rng = np.random.default_rng(3)
    square = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    backgrounds = (rng.integers(0, 256, (2, SIZE, SIZE, 3)) // 4).astype(np.uint8)
    backgrounds[0, 40:, 40:], backgrounds[1, 40:, 40:] = 0, 255
    video = np.stack([backgrounds[int(t > 8)] for t in range(16)])
    for t in range(16):
        video[t, 4:20, 4 + 2 * t : 20 + 2 * t] = square
    path = tmp_path_factory.mktemp("cut_clip") / "clip.mp4"
    write_video(path, video, options=NO_SCENECUT)
    cache = MotionCache(path.parent / "cache", CacheParams(short_side=None))
    assert prepare([("clip.mp4", path)], cache, progress=False).ok
    with VideoReader(path) as reader:
        clip = reader.read(np.arange(16), motion=True)
    shot = shot_ids(cache.info("clip.mp4").cuts)
    return clip, video_flow(clip.frames), np.diff(shot) != 0  # pair 8: frames 8, 9 lie across the cut


@pytest.mark.parametrize("source", ["diff", "flow", "mv"])
def test_mgm_guidance_stays_on_the_moving_square_at_the_cut(cut_clip, source):
    clip, flow, cuts = cut_clip
    assert np.flatnonzero(cuts).tolist() == [8]  # slice 4 holds frames 8 and 9
    magnitude, used = guidance(clip, (8, 4, 4), flow, prefer=source, cuts=cuts)
    assert used == source
    peaks = magnitude.reshape(8, -1).argmax(axis=1)
    assert (peaks < 4).all()  # every slice's peak is on the top row, where the square moves
    if source == "diff":  # unaware of the cut, the slice follows the corner that changed
        blind, _ = guidance(clip, (8, 4, 4), flow, prefer=source)
        assert blind[4].argmax() == 15
    if source == "mv":  # the frame after the cut counts as one without vectors, not as zero motion
        no_vectors = clip.has_motion.copy()
        no_vectors[9] = False
        clip_without = type(clip)(clip.frames, clip.motion, no_vectors, clip.indices)
        assert np.array_equal(magnitude, guidance(clip_without, (8, 4, 4), prefer="mv")[0])


def test_prepare_cut_ratio_zero_turns_detection_off(videos, tmp_path):
    root, _ = videos
    assert (
        main(
            [
                "prepare",
                str(root / "cut.mp4"),
                "--cache",
                str(tmp_path),
                "--short-side",
                "128",
                "--cut-ratio",
                "0",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    cache = MotionCache.from_dir(next(tmp_path.glob("flow-*")))
    assert cache.params.cuts.ratio == 0 and not cache.info("cut.mp4").cuts.any()
    assert cache.info("cut.mp4").cut_scores[19] > 4 * np.median(cache.info("cut.mp4").cut_scores)  # still scored
