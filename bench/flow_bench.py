"""Flow and motion-cache benchmark (issue 4): speed, size and accuracy of `motionmae prepare`.

For each shipped video (bikes.mp4, bigbuckbunny.mp4) it prints
- prepare speed: frames/s of one process on one core, end to end (probe, decode,
  flow, camera compensation, quantize, encode, write), best of `--repeat`, in wall time
  and in CPU time (steadier on a shared machine), and its ratio to decode-only speed
  (the same single-threaded gray decode prepare uses);
- cache bytes per frame against the source video's bytes per frame;
- stored-flow trajectory error: points on the centres of 8x8 cells, tracked through
  6 raw frames (bilinear sampling, no median filter) once on the flow read back from
  the cache at full resolution and once on full-precision float32 flow (same
  estimator and compensation, full resolution, no quantization); mean and 95th
  percentile of the end-point distance over trajectories that stay in the frame;
- prepare's steps one by one (`speed.prepare_stages`): CPU ms per frame of decode, flow,
  cut score, camera fit, compensation and encoding.

Then the flow's accuracy against known motion: frames of the shipped videos moved by a
random camera homography plus a disc moving on its own (`known_motion_pairs`): end-point
error of the raw flow against the true flow, and of the compensated flow against the
disc's own motion (zero on the background), away from the frame border, the disc's rim
and the background the disc covers. `--levers` adds the choices that made prepare faster
(issue 18), each against its alternative on the same inputs (`levers`).

    .venv/bin/python -m bench.flow_bench [--short-side 256] [--stride 4] [--codec jpeg] [--quality 90]
                                         [--pairs 48] [--levers]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from bench.speed import decode_rate, prepare_rate, prepare_stages
from bench.timing import machine_line
from motionmae.io.cache import CacheParams
from motionmae.io.video import gray_frames, output_size, probe, shipped_videos
from motionmae.motion.cuts import warp_residual
from motionmae.motion.flow import (
    FlowEstimator,
    FlowParams,
    homography_flow,
    homography_from_flow,
    pair_flow,
    remove_camera,
)

STEPS = 6  # trajectory length (raw frames)
CELL = 8  # one start point per 8x8 cell


def full_precision_flow(path, params: CacheParams) -> np.ndarray:
    """Float32 `(T-1, H, W, 2)` compensated flow at full resolution, never quantized."""
    estimator = FlowEstimator(params.flow.method, params.flow.preset)
    frames = list(gray_frames(path, params.short_side))
    return np.stack(
        [
            pair_flow(a, b, estimator, params.flow.compensation, params.flow.clamp)
            for a, b in zip(frames[:-1], frames[1:])
        ]
    )


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
    ys, xs = np.mgrid[CELL // 2 : height : CELL, CELL // 2 : width : CELL]
    starts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    errors = []
    for r in range(0, len(reference) - STEPS + 1, every):
        a, inside_a = track(reference[r : r + STEPS], starts)
        b, inside_b = track(stored[r : r + STEPS], starts)
        keep = inside_a & inside_b
        errors.append(np.linalg.norm(a[keep] - b[keep], axis=1))
    return np.concatenate(errors)


def _project(homography: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points `(x, y)` mapped by a `(3, 3)` homography."""
    h = homography
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w


def known_motion_pairs(count: int, short_side: int, seed: int = 0) -> list[tuple]:
    """`count` gray pairs with known flow, made from random frames of the shipped videos (in turn).

    Frame 1 is frame 0 seen by a camera that moves by a homography (shift <= 6 px, zoom <= 1 %,
    rotation <= 0.5 deg about the centre), with a disc of radius H/5 that moves <= 8 px on its
    own besides. Each item: frame0, frame1 (uint8 `(H, W)`), the true flow and the disc's own
    motion (float32 `(H, W, 2)`, zero off the disc), and the bool `(H, W)` masks of the pixels
    evaluated and of the evaluated pixels on the disc.
    """
    rng = np.random.default_rng(seed)
    videos = [list(gray_frames(path, short_side)) for path in shipped_videos()]
    pairs = []
    for i in range(count):
        frames = videos[i % len(videos)]
        frame0 = np.ascontiguousarray(frames[rng.integers(len(frames))])
        height, width = frame0.shape
        angle, zoom = np.deg2rad(rng.uniform(-0.5, 0.5)), 1 + rng.uniform(-0.01, 0.01)
        c, s = zoom * np.cos(angle), zoom * np.sin(angle)
        (tx, ty), (cx, cy) = rng.uniform(-6, 6, 2), (width / 2, height / 2)
        camera = np.array([[c, -s, cx - c * cx + s * cy + tx], [s, c, cy - s * cx - c * cy + ty], [0, 0, 1]])
        radius = height / 5
        centre = rng.uniform([radius, radius], [width - radius, height - radius])
        own = rng.uniform(-8, 8, 2)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        moved = np.array(_project(camera, *centre)) + own  # the disc's centre in frame 1
        on_disc1 = np.hypot(xs - moved[0], ys - moved[1]) < radius
        source = np.where(on_disc1, xs - own[0], xs), np.where(on_disc1, ys - own[1], ys)
        sx, sy = _project(np.linalg.inv(camera), *source)  # where each frame-1 pixel comes from
        frame1 = cv2.remap(
            frame0, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )
        from_centre = np.hypot(xs - centre[0], ys - centre[1])
        own_flow = np.where((from_centre < radius)[..., None], own, 0.0)
        to_x, to_y = _project(camera, xs, ys)
        to_x, to_y = to_x + own_flow[..., 0], to_y + own_flow[..., 1]
        margin = 8
        keep = (
            (np.minimum(xs, to_x) >= margin)
            & (np.maximum(xs, to_x) <= width - 1 - margin)
            & (np.minimum(ys, to_y) >= margin)
            & (np.maximum(ys, to_y) <= height - 1 - margin)
        )
        keep &= np.abs(from_centre - radius) > 4  # the disc's rim: motion boundary
        keep &= (from_centre < radius) | (np.hypot(to_x - moved[0], to_y - moved[1]) > radius + 4)  # covered
        truth = np.stack([to_x - xs, to_y - ys], axis=-1).astype(np.float32)
        pairs.append((frame0, frame1, truth, own_flow.astype(np.float32), keep, keep & (from_centre < radius)))
    return pairs


def known_motion_errors(pairs: list[tuple], estimator: FlowEstimator, fit=homography_from_flow) -> dict[str, float]:
    """Mean end-point errors (px) over `known_motion_pairs`: raw flow against the true flow (all
    evaluated pixels, and on the disc), flow compensated with the camera `fit(raw flow)` against
    the disc's own motion (background and disc)."""
    errors = {"raw": [], "raw_disc": [], "compensated_background": [], "compensated_disc": []}
    for frame0, frame1, truth, own, keep, disc in pairs:
        raw = estimator(frame0, frame1)
        error = np.linalg.norm(raw - truth, axis=-1)
        errors["raw"].append(error[keep].mean())
        errors["raw_disc"].append(error[disc].mean())
        error = np.linalg.norm(remove_camera(raw, fit(raw)) - own, axis=-1)
        errors["compensated_background"].append(error[keep & ~disc].mean())
        errors["compensated_disc"].append(error[disc].mean())
    return {name: float(np.mean(values)) for name, values in errors.items()}


def cpu_ms(fn, items, repeats: int = 3) -> float:
    """Best CPU ms per item of `fn(*item)` over `items`, of `repeats` passes."""
    best = np.inf
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            fn(*item)
        best = min(best, time.process_time() - start)
    return 1e3 * best / len(items)


def levers(pairs: list[tuple], short_side: int, preset: str, repeats: int) -> None:
    """Issue 18's choices for a faster prepare, each against its alternative on the same inputs:
    DIS refinement iterations and patch stride, USAC_FAST vs classic RANSAC for the camera, and
    the cut score read at every 4th vs every 2nd pixel. Timed on bikes.mp4's pairs (CPU ms);
    flow failures: pairs of the shipped videos whose warp residual (`cuts.warp_residual`, every
    2nd pixel) exceeds that of DIS with OpenCV's 5 refinement iterations by more than 0.5 luma
    levels, and pairs where it is that much lower."""
    frames = {path.name: [np.ascontiguousarray(g) for g in gray_frames(path, short_side)] for path in shipped_videos()}
    bikes = list(zip(frames["bikes.mp4"][:-1], frames["bikes.mp4"][1:]))
    print(
        f"levers, side by side (timed on bikes.mp4's {len(bikes)} pairs, CPU ms, best of {repeats}; "
        f"accuracy on the known-motion pairs; flow failures on the shipped videos' pairs):"
    )
    variants = {
        "ours": {},
        "5 refinement iterations (before)": {"VariationalRefinementIterations": 5},
        "3 refinement iterations": {"VariationalRefinementIterations": 3},
        "patch stride 5": {"PatchStride": 5},
    }
    residuals = {}
    for name, settings in variants.items():
        estimator = FlowEstimator("dis", preset)
        for setting, value in settings.items():
            getattr(estimator.dis, "set" + setting)(value)
        residuals[name] = np.array(
            [
                warp_residual(a, b, estimator(a, b), 2)
                for video in frames.values()
                for a, b in zip(video[:-1], video[1:])
            ]
        )
        e = known_motion_errors(pairs, estimator)
        print(
            f"  DIS {preset} {name:33s} {cpu_ms(estimator, bikes[:60], repeats):5.2f} ms/pair | raw "
            f"{e['raw']:.3f} px (disc {e['raw_disc']:.3f}), compensated background {e['compensated_background']:.3f}"
            f" px, disc {e['compensated_disc']:.3f} px"
        )
    before = residuals["5 refinement iterations (before)"]
    for name, residual in residuals.items():
        print(
            f"    {name}: flow fits worse on {(residual - before > 0.5).sum()} pairs, better on "
            f"{(before - residual > 0.5).sum()} of {len(before)}"
        )
    estimator = FlowEstimator("dis", preset)
    raws = [(estimator(a, b),) for a, b in bikes]
    fits = {"USAC_FAST": homography_from_flow, "RANSAC": functools.partial(homography_from_flow, method=cv2.RANSAC)}
    cameras = {name: [fit(raw) for (raw,) in raws] for name, fit in fits.items()}
    height, width = raws[0][0].shape[:2]
    apart = np.array(
        [
            np.abs(homography_flow(a, height, width, 4) - homography_flow(b, height, width, 4)).mean()
            for a, b in zip(*cameras.values())
        ]
    )
    ms = {name: cpu_ms(fit, raws, repeats) for name, fit in fits.items()}
    background = {
        name: known_motion_errors(pairs, estimator, fit)["compensated_background"] for name, fit in fits.items()
    }
    print(
        f"  camera fit USAC_FAST (ours) {ms['USAC_FAST']:.2f} ms, classic RANSAC {ms['RANSAC']:.2f} ms | their "
        f"camera flows differ by {apart.mean():.3f} px on average (p95 {np.percentile(apart, 95):.3f}, max "
        f"{apart.max():.2f}) | known motion, compensated background {background['USAC_FAST']:.3f} vs "
        f"{background['RANSAC']:.3f} px"
    )
    items = [(a, b, raw) for (a, b), (raw,) in zip(bikes, raws)]
    every4 = np.array([warp_residual(*item) for item in items])
    every2 = np.array([warp_residual(*item, 2) for item in items])
    change = np.abs(every4 - every2) / every2
    print(
        f"  cut score every 4th pixel (ours) {cpu_ms(warp_residual, items, repeats):.2f} ms, every 2nd "
        f"{cpu_ms(lambda *item: warp_residual(*item, 2), items, repeats):.2f} ms | scores differ by "
        f"{100 * np.median(change):.1f} % (median), {100 * change.max():.1f} % at most"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--stride", type=int, default=CacheParams.stride)
    parser.add_argument("--codec", default=CacheParams.codec, choices=["jpeg", "png"])
    parser.add_argument("--quality", type=int, default=CacheParams.quality)
    parser.add_argument("--preset", default=FlowParams.preset)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=48, help="frame pairs of the known-motion test")
    parser.add_argument(
        "--levers",
        action="store_true",
        help="also time issue 18's choices against their alternatives (DIS settings, camera fit, cut score sampling)",
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    params = CacheParams(
        flow=FlowParams(preset=args.preset),
        short_side=args.short_side,
        stride=args.stride,
        codec=args.codec,
        quality=args.quality,
    )
    print(f"machine: {machine_line()}")
    print(
        f"config: {params}, trajectories of {STEPS} steps from 8x8 cell centres, best of {args.repeat}, "
        f"OpenCV threads {cv2.getNumThreads()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for path in shipped_videos():
            info = probe(path)
            width, height = output_size(info.width, info.height, args.short_side)
            decode_fps = decode_rate(path, args.short_side, args.repeat, gray=True)
            prepare_fps, cache = prepare_rate(path, params, Path(tmp) / path.stem, args.repeat)
            cpu_fps, _ = prepare_rate(path, params, Path(tmp) / path.stem, args.repeat, time.process_time)
            entry = cache.info(path.name)
            cache_bpf = cache.entry_path(path.name).stat().st_size / info.num_frames
            video_bpf = path.stat().st_size / info.num_frames
            stored = cache.read(path.name, 0, entry.num_flows)
            errors = trajectory_error(full_precision_flow(path, params), stored)
            print(f"{path.name} ({info.width}x{info.height} -> {width}x{height}, {info.num_frames} frames):")
            print(
                f"  prepare {prepare_fps:6.1f} frames/s wall clock, {cpu_fps:6.1f} per CPU second, i.e. per core "
                f"(goal >= 200) | "
                f"decode only {decode_fps:6.1f} frames/s | prepare/decode speed ratio {prepare_fps / decode_fps:.2f}"
            )
            print(
                f"  cache {cache_bpf:7.0f} B/frame vs video {video_bpf:7.0f} B/frame "
                f"(ratio {cache_bpf / video_bpf:.2f}, goal <= 1)"
            )
            print(
                f"  stored-flow trajectory end-point error: mean {errors.mean():.3f} px (goal <= 0.5), "
                f"p95 {np.percentile(errors, 95):.3f} px over {len(errors)} trajectories"
            )
            stages = prepare_stages(path, params)
            total = sum(stages.values())
            print(
                "  steps, CPU ms/frame one at a time: "
                + " | ".join(f"{k} {v:.2f}" for k, v in stages.items())
                + f" | sum {total:.2f} ({1e3 / total:.0f} frames/s)"
            )
    pairs = known_motion_pairs(args.pairs, args.short_side)
    errors = known_motion_errors(pairs, FlowEstimator(params.flow.method, params.flow.preset))
    print(
        f"known motion, {args.pairs} pairs of shipped-video frames moved by a random camera homography and a "
        f"disc on its own (seed 0):"
    )
    print(
        f"  raw flow end-point error {errors['raw']:.3f} px (on the disc {errors['raw_disc']:.3f} px); "
        f"compensated flow against the disc's own motion: background {errors['compensated_background']:.3f} px, "
        f"disc {errors['compensated_disc']:.3f} px"
    )
    if args.levers:
        levers(pairs, args.short_side, args.preset, args.repeat)


if __name__ == "__main__":
    main()
