"""Crop-and-resize of a pretraining span: one cv2.resize per frame vs time folded into channels.

    .venv/bin/python -m bench.resize_bench [--repeats 20]

At the paper's settings: a 63-frame raw span decoded at short side 256
(256 x 455, bikes.mp4's aspect), a 256 px square crop (MultiScaleCrop scale
1.0) resized to 224, for the frames (uint8, 3 channels) and the flow (float32,
2 channels); one OpenCV thread, as in a data-loader worker. "folded" is the
approach `data._resize_stack` used before issue 15: time folded into channels,
resized in chunks of as many channels as this OpenCV takes at once (512 in
OpenCV 4, 128 in OpenCV 5, which made the unchunked 189-channel call fail).
"per frame" is the current `_resize_stack`. Best of `--repeats`.
"""

import argparse

import cv2
import numpy as np

from bench.timing import best_seconds, machine_line
from motionmae.data.datasets import CropBox, _resize_stack


def channel_limit() -> int:
    """The most channels one cv2.resize call accepts here (512 in OpenCV 4, 128 in OpenCV 5)."""
    for channels in (512, 128):
        try:
            cv2.resize(np.zeros((4, 4, channels), np.uint8), (2, 2))
            return channels
        except cv2.error:
            continue
    raise RuntimeError("this OpenCV resizes fewer than 128 channels at once")


def folded(stack: np.ndarray, box: CropBox, limit: int) -> np.ndarray:
    """The pre-issue-15 way: time folded into channels, resized `limit` channels at a time."""
    crops = stack[:, box.y : box.y + box.h, box.x : box.x + box.w]
    t, h, w, c = crops.shape
    flat = np.ascontiguousarray(crops.transpose(1, 2, 0, 3).reshape(h, w, t * c))
    pieces = [
        cv2.resize(flat[..., i : i + limit], (box.size, box.size), interpolation=cv2.INTER_LINEAR)
        for i in range(0, t * c, limit)
    ]
    out = np.concatenate([p.reshape(box.size, box.size, -1) for p in pieces], axis=-1)
    return out.reshape(box.size, box.size, t, c).transpose(2, 0, 1, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    limit = channel_limit()
    rng = np.random.default_rng(0)
    box = CropBox(100, 0, 256, 256, 224, flip=False)
    stacks = {
        "frames uint8": rng.integers(0, 256, (63, 256, 455, 3), dtype=np.uint8),
        "flow float32": rng.normal(0, 3, (62, 256, 455, 2)).astype(np.float32),
    }
    print(f"machine: {machine_line()}")
    print(
        f"config: 63-frame span 256 x 455 -> crop 256 -> 224, 1 OpenCV thread, best of {args.repeats}; "
        f"folded in chunks of {limit} channels (this OpenCV's limit)"
    )
    for name, stack in stacks.items():
        old = best_seconds(lambda: folded(stack, box, limit), args.repeats)
        new = best_seconds(
            lambda: _resize_stack(stack, box, box.x, box.y, box.w, box.h, box.size, cv2.INTER_LINEAR), args.repeats
        )
        diff = np.abs(
            folded(stack, box, limit).astype(np.float64)
            - _resize_stack(stack, box, box.x, box.y, box.w, box.h, box.size, cv2.INTER_LINEAR)
        ).max()
        print(
            f"  {name}: folded {old * 1e3:6.1f} ms | per frame {new * 1e3:6.1f} ms | "
            f"time ratio per frame / folded {new / old:.2f} | max abs difference {diff:.3g}"
        )


if __name__ == "__main__":
    main()
