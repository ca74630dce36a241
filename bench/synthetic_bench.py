"""Speed of the embedded data set generator: videos/s for the default 1,200-video set.

    .venv/bin/python -m bench.synthetic_bench [--videos-per-class 100] [--size 64] [--frames 48] [--workers 2]

Writes the data set into a temporary folder (deleted afterwards), prints the
machine, the configuration, the wall time and videos/s (goal: 1,200 videos at
64 px x 48 frames in <= 60 s with 2 workers), then where one process spends its
time per video (render, H.264 encode, ground-truth .npz) on a sample of videos.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.timing import machine_line
from motionmae.data import synthetic
from motionmae.io.video import write_video


def stages(size: int, frames: int, samples: int, folder: Path) -> dict:
    """Mean milliseconds per video of each stage, one process, `samples` videos over all classes."""
    spent = {"render": 0.0, "encode": 0.0, "truth": 0.0}
    for i in range(samples):
        label = i % len(synthetic.CLASSES)
        start = time.perf_counter()
        video, truth = synthetic.render_video(label, i, size, frames)
        rendered = time.perf_counter()
        write_video(folder / "v.mp4", video, options=synthetic.X264_OPTIONS)
        encoded = time.perf_counter()
        np.savez_compressed(folder / "v.npz", **truth)
        saved = time.perf_counter()
        spent["render"] += rendered - start
        spent["encode"] += encoded - rendered
        spent["truth"] += saved - encoded
    return {k: 1000 * v / samples for k, v in spent.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=48, help="videos for the per-stage breakdown")
    args = parser.parse_args()

    total = args.videos_per_class * len(synthetic.CLASSES)
    print(f"machine: {machine_line()}")
    print(
        f"config: {total} videos ({len(synthetic.CLASSES)} classes x {args.videos_per_class}), "
        f"{args.size} px x {args.frames} frames, --workers {args.workers}, x264 {synthetic.X264_OPTIONS}"
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        synthetic.make_dataset(
            Path(folder) / "data",
            videos_per_class=args.videos_per_class,
            size=args.size,
            frames=args.frames,
            workers=args.workers,
            progress=False,
        )
        seconds = time.perf_counter() - start
        megabytes = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6
        print(
            f"make_dataset: {seconds:.1f} s for {total} videos = {total / seconds:.1f} videos/s "
            f"({megabytes:.0f} MB on disk; goal for 1,200 videos: <= 60 s)"
        )
        per_video = stages(args.size, args.frames, args.samples, Path(folder))
    print(
        "one process, ms per video: "
        + ", ".join(f"{k} {v:.1f}" for k, v in per_video.items())
        + f", sum {sum(per_video.values()):.1f}"
    )


if __name__ == "__main__":
    main()
