"""Flow and motion-cache benchmark (issue 4): speed, size and accuracy of `motionmae prepare`.

For each shipped video (bikes.mp4, bigbuckbunny.mp4) it prints
- prepare speed: frames/s of one process on one core, end to end (probe, decode,
  flow, camera compensation, quantize, encode, write), best of `--repeat`, and its
  ratio to decode-only speed (the same single-threaded gray decode prepare uses);
- cache bytes per frame against the source video's bytes per frame;
- stored-flow trajectory error: points on the centres of 8x8 cells, tracked through
  6 raw frames (bilinear sampling, no median filter) once on the flow read back from
  the cache at full resolution and once on full-precision float32 flow (same
  estimator and compensation, full resolution, no quantization); mean and 95th
  percentile of the end-point distance over trajectories that stay in the frame.

    .venv/bin/python bench/flow_bench.py [--short-side 256] [--stride 4] [--codec jpeg] [--quality 90]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from motionmae.cache import CacheParams  # noqa: E402
from motionmae.flow import FlowEstimator, FlowParams, pair_flow  # noqa: E402
from motionmae.speed import decode_rate, machine_line, prepare_rate  # noqa: E402
from motionmae.video import gray_frames, output_size, probe, shipped_videos  # noqa: E402

STEPS = 6  # trajectory length (raw frames)
CELL = 8  # one start point per 8x8 cell


def full_precision_flow(path, params: CacheParams) -> np.ndarray:
    """Float32 `(T-1, H, W, 2)` compensated flow at full resolution, never quantized."""
    estimator = FlowEstimator(params.flow.method, params.flow.preset)
    frames = list(gray_frames(path, params.short_side))
    return np.stack([pair_flow(a, b, estimator, params.flow.compensation, params.flow.clamp)
                     for a, b in zip(frames[:-1], frames[1:])])


def track(flows: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """End points `(N, 2)` of `points` followed through `flows` `(L, H, W, 2)`, and which stayed inside."""
    height, width = flows.shape[1:3]
    inside = np.ones(len(points), bool)
    for flow in flows:
        x = points[:, 0].reshape(-1, 1).astype(np.float32)
        y = points[:, 1].reshape(-1, 1).astype(np.float32)
        points = points + cv2.remap(flow, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 2)
        inside &= (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    return points, inside


def trajectory_error(reference: np.ndarray, stored: np.ndarray, every: int = 2) -> np.ndarray:
    """End-point distances (px) of STEPS-step trajectories starting every `every` frames."""
    height, width = reference.shape[1:3]
    ys, xs = np.mgrid[CELL // 2:height:CELL, CELL // 2:width:CELL]
    starts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    errors = []
    for r in range(0, len(reference) - STEPS + 1, every):
        a, inside_a = track(reference[r:r + STEPS], starts)
        b, inside_b = track(stored[r:r + STEPS], starts)
        keep = inside_a & inside_b
        errors.append(np.linalg.norm(a[keep] - b[keep], axis=1))
    return np.concatenate(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--stride", type=int, default=CacheParams.stride)
    parser.add_argument("--codec", default=CacheParams.codec, choices=["jpeg", "png"])
    parser.add_argument("--quality", type=int, default=CacheParams.quality)
    parser.add_argument("--preset", default=FlowParams.preset)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    params = CacheParams(flow=FlowParams(preset=args.preset), short_side=args.short_side, stride=args.stride,
                         codec=args.codec, quality=args.quality)
    print(f"machine: {machine_line()}")
    print(f"config: {params}, trajectories of {STEPS} steps from 8x8 cell centres, best of {args.repeat}, "
          f"OpenCV threads {cv2.getNumThreads()}")
    with tempfile.TemporaryDirectory() as tmp:
        for path in shipped_videos():
            info = probe(path)
            width, height = output_size(info.width, info.height, args.short_side)
            decode_fps = decode_rate(path, args.short_side, args.repeat, gray=True)
            prepare_fps, cache = prepare_rate(path, params, Path(tmp) / path.stem, args.repeat)
            entry = cache.info(path.name)
            cache_bpf = cache.entry_path(path.name).stat().st_size / info.num_frames
            video_bpf = path.stat().st_size / info.num_frames
            stored = cache.read(path.name, 0, entry.num_flows)
            errors = trajectory_error(full_precision_flow(path, params), stored)
            print(f"{path.name} ({info.width}x{info.height} -> {width}x{height}, {info.num_frames} frames):")
            print(f"  prepare {prepare_fps:6.1f} frames/s per core (goal >= 150) | decode only {decode_fps:6.1f} "
                  f"frames/s | prepare/decode speed ratio {prepare_fps / decode_fps:.2f}")
            print(f"  cache {cache_bpf:7.0f} B/frame vs video {video_bpf:7.0f} B/frame "
                  f"(ratio {cache_bpf / video_bpf:.2f}, goal <= 1)")
            print(f"  stored-flow trajectory end-point error: mean {errors.mean():.3f} px (goal <= 0.5), "
                  f"p95 {np.percentile(errors, 95):.3f} px over {len(errors)} trajectories")


if __name__ == "__main__":
    main()
