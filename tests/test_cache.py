"""Motion cache and `motionmae prepare`: read-back, keys, atomic resumable runs, bad files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from motionmae.io.cache import CacheError, CacheParams, MotionCache
from motionmae.io.prepare import list_videos, prepare, shard
from motionmae.io.video import gray_frames, write_video
from motionmae.motion.flow import FlowEstimator, pair_flow

HEIGHT, WIDTH = 96, 128


def panning_video(frames: int, seed: int) -> np.ndarray:
    """RGB uint8 (T, H, W, 3): a camera panning over a textured scene, a square moving on its own."""
    rng = np.random.default_rng(seed)
    scene = cv2.GaussianBlur(rng.random((2 * HEIGHT, 3 * WIDTH, 3)).astype(np.float32), (0, 0), 2.0)
    scene = cv2.normalize(scene, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    pan = rng.uniform(-2, 2, size=2)
    video = []
    for t in range(frames):
        shift = np.array([[1, 0, WIDTH / 2 + pan[0] * t], [0, 1, HEIGHT / 2 + pan[1] * t]])
        frame = cv2.warpAffine(scene, shift, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        x = 20 + 2 * t % (WIDTH - 40)
        frame[30:54, x : x + 24] = scene[:24, :24]
        video.append(frame)
    return np.stack(video)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six videos in two folders (two share a file name), a list file, a truncated and a non-video file."""
    root = tmp_path_factory.mktemp("dataset")
    names = ["a/clip0.mp4", "a/clip1.mp4", "a/clip2.mp4", "b/clip0.mp4", "b/clip3.mp4", "b/clip4.mp4"]
    for seed, name in enumerate(names):
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, panning_video(24, seed))
    whole = root / "whole.mkv"
    write_video(whole, panning_video(36, 9))
    (root / "bad").mkdir()
    (root / "bad/cut.mkv").write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    whole.unlink()
    (root / "bad/notes.mp4").write_text("this is not a video\n")
    (root / "train.csv").write_text("".join(f"{name} {i % 2}\n" for i, name in enumerate(names)))
    (root / "all.csv").write_text("".join(f"{name} 0\n" for name in names) + "bad/cut.mkv 1\nbad/notes.mp4 1\n")
    return root


def run_prepare(*args, **popen):
    command = [sys.executable, "-m", "motionmae", "prepare", *map(str, args), "--quiet", "--workers", "1"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def entries(cache_root: Path) -> dict[str, bytes]:
    """Every file under the cache's entry folders, by relative path (temporary files included)."""
    return {
        p.relative_to(cache_root).as_posix(): p.read_bytes()
        for p in sorted(cache_root.glob("flow-*/entries/**/*"))
        if p.is_file()
    }


def test_list_file_keys_are_relative_paths_and_shards_split_the_list(dataset):
    videos = list_videos(dataset / "train.csv")
    keys = [key for key, _ in videos]
    assert keys == sorted(keys) and "a/clip0.mp4" in keys and "b/clip0.mp4" in keys and len(keys) == 6
    cache = MotionCache(dataset / "cache")
    assert cache.entry_path("a/clip0.mp4") != cache.entry_path("b/clip0.mp4")
    assert [k for k, _ in list_videos(dataset / "a")] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    parts = [shard(videos, i, 4) for i in range(4)]
    assert sorted(v for part in parts for v in part) == videos


def test_stored_flow_reads_back_within_quantization_error(dataset, tmp_path):
    path = dataset / "a/clip1.mp4"
    exact = MotionCache(tmp_path, CacheParams(short_side=None, codec="png"))
    lossy = MotionCache(tmp_path, CacheParams(short_side=None))
    assert exact.dir != lossy.dir
    assert prepare([("a/clip1.mp4", path)], exact, progress=False).ok
    assert prepare([("a/clip1.mp4", path)], lossy, progress=False).ok

    frames = list(gray_frames(path))
    estimator = FlowEstimator()
    truth = np.stack([pair_flow(a, b, estimator, stride=4) for a, b in zip(frames[:-1], frames[1:])])
    info = exact.info("a/clip1.mp4")
    assert (info.num_frames, info.frame_size, info.grid_size) == (24, (HEIGHT, WIDTH), (HEIGHT // 4, WIDTH // 4))
    step = exact.params.step
    grid = exact.read("a/clip1.mp4", 0, 23, size=info.grid_size, crop=(0, 0, WIDTH, HEIGHT)) * 4  # grid px -> frame px
    assert grid.shape == truth.shape and grid.dtype == np.float32
    assert np.abs(grid - truth).max() <= step / 2 + 1e-4  # lossless after quantization
    jpeg = lossy.read("a/clip1.mp4", 0, 23, size=info.grid_size) * 4
    assert np.abs(jpeg - truth).mean() <= step  # JPEG adds about a quantization step on average

    full = exact.read("a/clip1.mp4", 0, 23)
    assert full.shape == (23, HEIGHT, WIDTH, 2)
    assert np.array_equal(exact.read("a/clip1.mp4", 5, 9), full[5:9])  # a window reads only its fields
    half = exact.read("a/clip1.mp4", 5, 9, size=(HEIGHT // 2, WIDTH // 2))
    assert half.shape == (4, HEIGHT // 2, WIDTH // 2, 2)
    pooled = full[5:9].reshape(4, HEIGHT // 2, 2, WIDTH // 2, 2, 2).mean(axis=(2, 4))
    assert np.abs(half - pooled / 2).mean() < 0.05  # half the pixels: half the vectors
    crop = exact.read("a/clip1.mp4", 5, 9, crop=(32, 16, 64, 48))
    assert crop.shape == (4, 48, 64, 2)
    assert np.allclose(crop, full[5:9, 16:64, 32:96], atol=1e-4)
    with pytest.raises(CacheError, match="outside"):
        exact.read("a/clip1.mp4", 20, 24)
    with pytest.raises(CacheError, match="not in the motion cache"):
        exact.read("a/clip9.mp4", 0, 1)


def bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float64 bilinear samples of `field` (h, w, C) at columns `x` (W,) and rows `y` (H,), edges replicated."""
    h, w = field.shape[:2]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[None, :, None], (y - y0)[:, None, None]
    xa, xb, ya, yb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1), np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    f = field.astype(np.float64)
    top, bottom = f[ya][:, xa] * (1 - fx) + f[ya][:, xb] * fx, f[yb][:, xa] * (1 - fx) + f[yb][:, xb] * fx
    return top * (1 - fy) + bottom * fy


def test_resampled_flow_is_the_bilinear_field_under_any_box(dataset, tmp_path):
    """`resample` (two fields per 4-channel warp) gives, for every field, crop, size and mirror, the
    stored field sampled bilinearly at each output pixel's centre, vectors rescaled (dx negated when
    mirrored); sparse `stored` fields are the rows of a window; `out` may be a list of rows."""
    cache = MotionCache(tmp_path, CacheParams(short_side=None))
    assert prepare([("a/clip2.mp4", dataset / "a/clip2.mp4")], cache, progress=False).ok
    info = cache.info("a/clip2.mp4")
    (grid_h, grid_w), (frame_h, frame_w) = info.grid_size, info.frame_size
    flows = np.array([2, 3, 5, 8, 9, 10, 17])  # an odd count: the last field is warped alone
    stored = cache.stored("a/clip2.mp4", flows)
    assert np.array_equal(stored[3:6], cache.stored("a/clip2.mp4", np.arange(8, 11)))
    rng = np.random.default_rng(0)
    for _ in range(6):
        w, h = int(rng.integers(24, frame_w + 1)), int(rng.integers(24, frame_h + 1))
        x0, y0 = int(rng.integers(frame_w - w + 1)), int(rng.integers(frame_h - h + 1))
        size, flip = 56, bool(rng.integers(2))
        rows = [np.zeros((size, size, 2), np.float32) for _ in flows]
        out = cache.resample("a/clip2.mp4", stored, (size, size), (x0, y0, w, h), flip, out=rows)
        sx, sy = w / size, h / size
        u = np.arange(size)
        x = (x0 + ((size - 1 - u) if flip else u) * sx + 0.5 * sx) * grid_w / frame_w - 0.5
        y = (y0 + (u + 0.5) * sy) * grid_h / frame_h - 0.5
        for field, got in zip(stored, out):
            scale = np.array([-1 / sx if flip else 1 / sx, 1 / sy])
            want = bilinear(field, x, y) * scale
            step = max(np.abs(np.diff(field, axis=a)).max() for a in (0, 1)) * np.abs(scale).max()
            assert np.abs(got - want).max() < 1e-3 + step / 16  # OpenCV 4 rounds coordinates to 1/32 px
    assert np.array_equal(cache.resample("a/clip2.mp4", stored[:1]), cache.read("a/clip2.mp4", 2, 3))


def test_killed_prepare_resumes_to_the_same_cache(dataset, tmp_path):
    reference = tmp_path / "reference"
    assert run_prepare(dataset / "train.csv", "--cache", reference).wait(timeout=120) == 0

    resumed = tmp_path / "resumed"
    process = run_prepare(dataset / "train.csv", "--cache", resumed, start_new_session=True)
    deadline = time.time() + 60
    while not list(resumed.glob("flow-*/entries/**/*.flow")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = list(resumed.glob("flow-*/entries/**/*.flow"))
    assert 1 <= len(finished) < 6, "the run should have been killed mid-way"
    cache = MotionCache.from_dir(next(resumed.glob("flow-*")))
    keys = [key for key, _ in list_videos(dataset / "train.csv") if cache.entry_path(key).exists()]
    assert len(keys) == len(finished) and all(cache.has(key) for key in keys)  # a kill leaves no partial entry

    restart = run_prepare(dataset / "train.csv", "--cache", resumed)
    out, _ = restart.communicate(timeout=120)
    assert restart.returncode == 0
    assert f"{len(finished)} already cached" in out
    assert entries(resumed) == entries(reference)  # byte-identical, no temporary files left


def test_unreadable_files_are_skipped_and_truncated_ones_keep_what_decodes(dataset, tmp_path):
    process = run_prepare(dataset / "all.csv", "--cache", tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "7 extracted" in out and "1 failed" in out
    assert "videos: 7 of 8 videos read, 1 skipped (not_a_video 1)" in out
    report = json.loads(next(tmp_path.glob("flow-*/report.json")).read_text())
    assert (report["videos"], report["read"], report["skipped"]) == (8, 7, 1)
    assert report["skipped_reasons"] == {"not_a_video": 1}
    [failure] = report["skipped_videos"]
    assert failure["video"] == "bad/notes.mp4" and "not a readable video" in failure["reason"]
    assert "FAILED" in err and "notes.mp4" in err
    [note] = report["notes"]  # the truncated file is stored with the frames that decode, and noted
    assert note["video"] == "bad/cut.mkv" and "truncated" in note["note"] and "note: " in out
    decoded = sum(1 for _ in gray_frames(dataset / "bad/cut.mkv"))
    cache = MotionCache.from_dir(next(tmp_path.glob("flow-*")))
    assert 0 < decoded < 36 and cache.info("bad/cut.mkv").num_frames == decoded
    assert len(entries(tmp_path)) == 7


def test_changing_short_side_makes_new_entries(dataset, tmp_path):
    one_video = dataset / "b/clip3.mp4"
    assert run_prepare(one_video, "--cache", tmp_path, "--short-side", 64).wait(timeout=60) == 0
    first = entries(tmp_path)
    assert run_prepare(one_video, "--cache", tmp_path, "--short-side", 48).wait(timeout=60) == 0
    both = entries(tmp_path)
    assert len(first) == 1 and len(both) == 2 and set(first) < set(both)
    sizes = {MotionCache.from_dir(d).info("clip3.mp4").frame_size for d in tmp_path.glob("flow-*")}
    assert sizes == {(64, 86), (48, 64)}


def test_a_replaced_video_is_extracted_again(tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, panning_video(12, 0))
    cache = MotionCache(tmp_path / "cache", CacheParams(short_side=None))
    assert prepare([("clip.mp4", video)], cache, progress=False).done == 1
    assert prepare([("clip.mp4", video)], cache, progress=False).cached == 1  # unchanged: reused
    write_video(video, panning_video(20, 1))  # same name, other content
    again = prepare([("clip.mp4", video)], cache, progress=False)
    assert (again.done, again.cached) == (1, 0)
    assert cache.info("clip.mp4").num_frames == 20
    assert prepare([("clip.mp4", video)], cache, progress=False).cached == 1
