"""TV-L1 peer of `motionmae bench speed`: OpenCV's Dual TV-L1 flow timed on given gray frames.

Run as a script by the benchmark venv's Python (numpy + opencv-contrib-python-headless,
which cannot share an environment with the package's opencv-python-headless);
imports nothing from motionmae:

    .venv-tvl1/bin/python bench/tvl1_peer.py FRAMES.npy [--threads 1]

FRAMES.npy holds uint8 gray frames (T, H, W). Prints one JSON line: OpenCV's
version, the thread count, the pairs timed and the mean seconds per pair
(frame t to t+1, default TV-L1 parameters as denseflow's CPU path uses them).
"""

import argparse
import json
import time

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("frames", help="uint8 gray frames (T, H, W) as .npy")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default: 1)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    gray = np.load(args.frames)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()  # type: ignore[attr-defined]  # opencv-contrib only
    start = time.perf_counter()
    for frame0, frame1 in zip(gray[:-1], gray[1:]):
        tvl1.calc(frame0, frame1, None)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "cv2": cv2.__version__,
                "threads": cv2.getNumThreads(),
                "pairs": len(gray) - 1,
                "seconds_per_pair": seconds / (len(gray) - 1),
            }
        )
    )


if __name__ == "__main__":
    main()
