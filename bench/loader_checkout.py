"""Clips per CPU second of the pretraining loader of whichever motionmae is imported (one thread).

`motionmae bench loader` runs the loader before issue 18 as options off (data.fast_loader=false,
data.repeats=1), in today's code. To time the code as it was, import another checkout:

    git archive 8fb7918 motionmae | tar -x -C /tmp/before      # main before issue 18
    PYTHONPATH=/tmp/before .venv/bin/python -m bench.loader_checkout mme-vitb-k400 data/real/list.txt cache/real
    .venv/bin/python -m bench.loader_checkout mme-vitb-k400 data/real/list.txt cache/real --set data.fast_loader=false

Prints the checkout's folder and clips per CPU second over `--clips` clips (video i % len for clip i).
"""

import argparse
import time

import cv2
import torch

import motionmae
from motionmae.config import load_config

try:
    from motionmae.motion.targets import build_target
    from motionmae.train.pretrain import build_dataset
except ImportError:  # a checkout from before the layered subpackages
    from motionmae.pretrain import build_dataset
    from motionmae.targets import build_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("list")
    parser.add_argument("cache")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    config = load_config(args.config, [f"data.train={args.list}", f"data.cache={args.cache}", *args.set])
    t = config.target
    dataset = build_dataset(
        config, build_target(t.name, tubelet=config.model.tubelet, patch=config.model.patch, **t.options)
    )
    dataset[(0, 0)]
    start = time.process_time()
    for i in range(args.clips):
        dataset[(1, i % len(dataset))]
    rate = args.clips / (time.process_time() - start)
    print(f"{motionmae.__file__.rsplit('/', 2)[0]}: {args.config} {' '.join(args.set)}: {rate:.2f} clips per CPU s")


if __name__ == "__main__":
    main()
