"""Mask generation speed per clip, and how much of a moving object each strategy masks.

    .venv/bin/python -m bench.masking_bench [--calls 2000] [--videos 12] [--ratio 0.75]

Speed: mean time to make one mask on the 8 x 14 x 14 token grid (goal < 1 ms),
strategies at their default ratios, mgm from a precomputed magnitude map;
turning a clip's codec vectors into that map is timed on its own. Decoding
is excluded.

Coverage: synthetic 224 x 224 videos of a textured square moving over a
static noisy background, encoded to H.264 (with B-frames) and read back with
their codec vectors; the share of the object's tokens (patch at least 1/4
covered within the tubelet) that each strategy masks at `--ratio`, averaged
over videos and 10 seeds each. The same videos as MJPEG (no vectors) show the
frame-difference fallback.
"""

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.timing import machine_line
from motionmae.io.video import read_frames, write_video
from motionmae.motion.masking import MaskGenerator, guidance

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


def name(kind, options) -> str:
    return kind + (" sparse" if options.get("sparse") else " dense" if kind in ("smm", "mgm") else "")


def per_call(fn, calls: int) -> float:
    """Mean seconds per call over `calls` calls, after a short warm-up."""
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def moving_square(seed: int, frames: int = 16, size: int = 224):
    """RGB (T, H, W, 3) of a square moving at constant velocity, and its object tokens (T/2, 14, 14)."""
    rng = np.random.default_rng(seed)
    side = int(rng.integers(32, 65))
    speed = rng.uniform(2, 8) * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
    start = rng.uniform(0, size - side, 2)
    end = np.clip(start + speed * (frames - 1), 0, size - side)
    path = np.linspace(start, end, frames).round().astype(int)
    background = (rng.integers(0, 256, (size, size, 3)) // 3).astype(np.uint8)
    texture = np.kron(rng.integers(0, 256, (side // 8 + 1, side // 8 + 1, 3)), np.ones((8, 8, 1)))[:side, :side]
    video = np.repeat(background[None], frames, axis=0)
    covered = np.zeros((frames, size, size), bool)
    for t, (x, y) in enumerate(path):
        video[t, y : y + side, x : x + side] = texture
        covered[t, y : y + side, x : x + side] = True
    tokens = covered.reshape(frames // 2, 2, 14, 16, 14, 16).mean(axis=(1, 3, 5)) > 0.25
    return video, tokens


def speed(calls: int):
    rng = np.random.default_rng(0)
    magnitude = rng.random(GRID).astype(np.float32)
    print(f"speed: mean per clip over {calls} calls, grid {GRID}, default ratios")
    for kind, options in STRATEGIES:
        generator = MaskGenerator(kind, grid=GRID, options=options)
        seconds = per_call(lambda: generator(rng, magnitude), calls)
        print(f"  {name(kind, options):12s} ratio {generator.ratio:<4g} {seconds * 1e6:7.1f} us")
    clip = type("Clip", (), {})()
    clip.frames = np.zeros((16, 224, 224, 3), np.uint8)
    clip.motion = rng.normal(0, 2, (16, 28, 28, 2)).astype(np.float32)
    clip.has_motion = np.arange(16) % 12 != 0
    seconds = per_call(lambda: guidance(clip, GRID), calls)
    print(f"  {'mv -> map':12s} (16, 28, 28, 2) vectors to (8, 14, 14) magnitudes {seconds * 1e6:7.1f} us")
    clip.has_motion = np.zeros(16, bool)
    clip.frames = rng.integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    seconds = per_call(lambda: guidance(clip, GRID), max(calls // 20, 10))
    print(f"  {'diff -> map':12s} (16, 224, 224, 3) frames to (8, 14, 14) magnitudes {seconds * 1e6:7.1f} us")


def coverage(videos: int, ratio: float, folder: Path):
    print(f"coverage of the moving object's tokens at ratio {ratio}, {videos} H.264 videos x 10 seeds")
    results = {name(k, o): {"mv": [], "diff": []} for k, o in STRATEGIES}
    sources = {"mv": set(), "diff": set()}
    for seed in range(videos):
        video, tokens = moving_square(seed)
        clips = {}
        for codec, suffix, pix_fmt in (("libx264", "mp4", "yuv420p"), ("mjpeg", "avi", "yuvj420p")):
            path = folder / f"square{seed}.{suffix}"
            write_video(path, video, codec=codec, pix_fmt=pix_fmt)
            clips[codec] = read_frames(path, np.arange(16), motion=True)
        for kind, options in STRATEGIES:
            generator = MaskGenerator(kind, ratio, GRID, options=options)
            for codec, key in (("libx264", "mv"), ("mjpeg", "diff")):
                for s in range(10):
                    mask, source = generator.for_clip(clips[codec], np.random.default_rng(s))
                    results[name(kind, options)][key].append(mask.reshape(GRID)[tokens].mean())
                    if kind == "mgm":
                        sources[key].add(source)
    print(
        f"  {'':12s} {'H.264 (' + '/'.join(sorted(sources['mv'])) + ')':>16s}"
        f" {'MJPEG (' + '/'.join(sorted(sources['diff'])) + ')':>16s}"
    )
    for label, by_codec in results.items():
        h264, mjpeg = (np.array(by_codec[k]) for k in ("mv", "diff"))
        print(f"  {label:12s} {h264.mean():9.3f} (min {h264.min():.2f}) {mjpeg.mean():6.3f} (min {mjpeg.min():.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="mask calls timed per strategy")
    parser.add_argument("--videos", type=int, default=12, help="synthetic videos for coverage")
    parser.add_argument("--ratio", type=float, default=0.75, help="mask ratio for coverage")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"machine: {machine_line()}")
    speed(args.calls)
    with tempfile.TemporaryDirectory() as folder:
        coverage(args.videos, args.ratio, Path(folder))


if __name__ == "__main__":
    main()
