"""Target-building time per batch on CPU, its share of a pretraining step, and the dataset's clips/s;
or (`--normalization`) what each position normalization makes of still and moving points.

    .venv/bin/python -m bench.targets_bench [--config demo] [--batch 16] [--repeats 5] [--threads 1] [--clock cpu]
    .venv/bin/python -m bench.targets_bench --normalization [--videos-per-class 8] [--seed 0]

Builds every target (traj, traj with the exact HOG `hog_stride=1`, and the baselines)
on one batch of random frames and smooth random flow at the config's clip geometry
(frames, stride, crop size), and times one pretraining step of the config's model
(forward, target_loss, backward, AdamW) on the same batch. Then writes a small
synthetic data set and its motion cache to a temporary folder and times the
config's `PretrainDataset` in this one process, single-threaded like a data-loader
worker (decode, cache read, joint augmentation, mask). Prints the machine, the
medians over `--repeats` runs, traj's share of step + target (goal: <= 10 % at the
demo config) and the clips/s of one worker.

`--clock cpu` (default) times this process's CPU time, which other jobs on a shared
machine do not inflate as much as wall time; with `--threads` above 1 it sums the
threads, so use `--clock wall` there.

`--normalization` writes the embedded synthetic data set (`--videos-per-class`, the
config's geometry) and its motion cache to a temporary folder, takes the centre clip of
every training video as a pretraining sample (cached flow, no augmentation) and sorts
its trajectories by the generator's ground-truth flow over each 8x8 start cell and the
trajectory's L raw frames: "still" (true motion below 0.02 px/frame everywhere in the
cell) and "moving" (mean true motion at least 0.2 px/frame). It prints, per
`traj_norm`, the RMS of the position targets on each set, their ratio, and the share
of the position part's energy on moving points; then the net motion per step of the
raw trajectories on both sets (quantiles, px), which is what `dead_zone` and
`traj_scale` are chosen from.
"""

import argparse
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bench.speed import dataset_rate, synthetic_training_set
from bench.timing import machine_line, median_seconds
from motionmae.common.lists import read_list
from motionmae.config import load_config
from motionmae.data.datasets import PretrainDataset
from motionmae.data.synthetic import true_flow
from motionmae.models.vit import PretrainModel, token_grid
from motionmae.motion.masking import MaskGenerator, tube_mask
from motionmae.motion.targets import TARGETS, build_target, input_frames
from motionmae.train.pretrain import build_dataset

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def clip_batch(batch, span, size, seed=0):
    """Random frames uint8 (B, span, S, S, 3) and smooth random flow (B, span-1, S, S, 2) of a few px."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, span, size, size, 3), generator=g, dtype=torch.uint8)
    coarse = torch.randn(batch * (span - 1), 2, max(size // 16, 1), max(size // 16, 1), generator=g) * 2
    flow = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return frames, flow.view(batch, span - 1, 2, size, size).permute(0, 1, 3, 4, 2).contiguous()


def median_ms(fn, repeats, clock):
    return 1000 * median_seconds(fn, repeats, clock)


NORMS = {  # label -> target options
    "token (old default)": {"traj_norm": "token"},
    "scale (new default)": {},
    "scale, no dead zone": {"dead_zone": 0.0},
    "scale, dead zone 0.5": {"dead_zone": 0.5},
    "across_k (release)": {"traj_norm": "across_k"},
    "none (px)": {"traj_norm": "none"},
}


def point_motion(truth_flow, start, steps, cell):
    """Per 8x8 start cell of a slice starting on raw frame `start`: (max, mean) true motion px/frame over the
    cell and the trajectory's `steps` frames, each `(H/cell, W/cell)`."""
    speed = np.linalg.norm(truth_flow[start : start + steps], axis=-1)  # (L, H, W)
    h, w = speed.shape[1:]
    cells = speed.reshape(len(speed), h // cell, cell, w // cell, cell)
    return cells.max(axis=(0, 2, 4)), cells.mean(axis=(0, 2, 4))


def token_order(cells, tokens, k):
    """A `(Hc, Wc)` map over the start cells of one slice -> `(tokens * tokens, K)` in the target's order."""
    side = int(math.isqrt(k))
    return cells.reshape(tokens, side, tokens, side).transpose(0, 2, 1, 3).reshape(-1, k)


def normalization(args, config):
    """Target RMS on still vs moving points per position normalization (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_training_set(config, Path(tmp), args.videos_per_class, seed=args.seed)
        d = config.data
        raw = build_target("traj", traj_norm="none", shape=False)
        targets = {label: build_target("traj", shape=False, **options) for label, options in NORMS.items()}
        grid = token_grid(d.frames, d.size, config.model.tubelet, config.model.patch)
        dataset = PretrainDataset(
            read_list(d.train), d, raw.raw_span(d.frames, d.stride), MaskGenerator("tube", 0.5, grid), train=False
        )
        k, steps, cell = raw.num_points, raw.traj_len, raw.cell
        values = {label: {"still": [], "moving": []} for label in targets}
        net = {"still": [], "moving": []}
        for item in dataset.items:
            sample, _ = dataset.sample(item, np.random.default_rng(0))
            truth = np.load(item.path.with_suffix(".npz"))
            start = max(0, len(truth["pose"]) - dataset.raw_span) // 2
            motion = true_flow(truth)[start : start + dataset.raw_span - 1]
            frames, flow = sample["frames"][None], sample["flow"][None]
            moves, valid = raw(frames, flow, d.frames, d.stride)
            tokens = d.size // config.model.patch
            for j in range(grid[0]):
                peak, mean = point_motion(motion, j * config.model.tubelet * d.stride, steps, cell)
                sets = {"still": token_order(peak < 0.02, tokens, k), "moving": token_order(mean >= 0.2, tokens, k)}
                rows = slice(j * tokens * tokens, (j + 1) * tokens * tokens)
                ok = valid[0, rows].view(-1, k, steps * 2)[..., 0].numpy()
                step = moves[0, rows].view(-1, k, steps, 2).mean(2).norm(dim=-1).numpy()
                for name, chosen in sets.items():
                    net[name].append(step[chosen & ok])
                for label, target in targets.items():
                    y = target(frames, flow, d.frames, d.stride)[0][0, rows].view(-1, k, steps * 2).numpy()
                    for name, chosen in sets.items():
                        values[label][name].append(y[chosen & ok].ravel())
    count = {name: sum(len(a) for a in arrays) for name, arrays in net.items()}
    print(
        f"data: {len(dataset.items)} synthetic training videos ({args.videos_per_class} per class, seed {args.seed}), "
        f"centre clips of {d.frames} frames at stride {d.stride}, {d.size} px, cached flow; trajectories: "
        f"{count['still']} still, {count['moving']} moving"
    )
    print(f"  {'traj_norm':22s} {'RMS still':>10s} {'RMS moving':>11s} {'moving/still':>13s} {'energy on moving':>17s}")
    for label, sets in values.items():
        still, moving = (np.concatenate(sets[name]) for name in ("still", "moving"))
        rms = [float(np.sqrt(np.mean(v**2))) for v in (still, moving)]
        share = (moving**2).sum() / max((moving**2).sum() + (still**2).sum(), 1e-12)
        print(f"  {label:22s} {rms[0]:10.3f} {rms[1]:11.3f} {rms[1] / max(rms[0], 1e-12):13.2f} {share:17.1%}")
    for name, arrays in net.items():
        quantiles = np.percentile(np.concatenate(arrays), [10, 50, 90, 99])
        print(
            f"  net motion per step, {name:6s} (px): "
            + ", ".join(f"p{q} {v:.3f}" for q, v in zip((10, 50, 90, 99), quantiles))
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help="preset or YAML file giving the clip geometry and model")
    parser.add_argument("--batch", type=int, default=None, help="clips per batch (default: the config's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="cpu: process CPU time (default); wall")
    parser.add_argument(
        "--videos-per-class", type=int, default=2, help="synthetic videos per class for the dataset timing"
    )
    parser.add_argument("--clips", type=int, default=48, help="clips drawn for the dataset timing")
    parser.add_argument(
        "--normalization",
        action="store_true",
        help="measure the position normalizations on still vs moving points instead of timing",
    )
    parser.add_argument("--seed", type=int, default=0, help="synthetic data set seed (--normalization)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    config = load_config(args.config)
    if args.normalization:
        print(f"machine: {machine_line()} | {args.threads} threads")
        print(f"config: {args.config}; traj_scale 1 px and dead_zone 0.3 px per step (defaults)")
        normalization(args, config)
        return
    frames_n, stride, size = config.data.frames, config.data.stride, config.data.size
    batch = args.batch or config.optim.batch_size
    print(f"machine: {machine_line()} | {args.threads} threads")
    print(
        f"config: {args.config}: {batch} clips x {frames_n} frames at stride {stride}, {size} px, "
        f"ViT-{config.model.size}, mask {config.mask.kind} {config.mask.ratio}; median of {args.repeats}, "
        f"{args.clock} clock"
    )

    targets = {name: build_target(name) for name in TARGETS}
    targets["traj exact"] = build_target("traj", hog_stride=1)
    span = max(t.raw_span(frames_n, stride) for t in targets.values())
    frames, flow = clip_batch(batch, span, size)
    spent = {}
    for name, target in targets.items():
        spent[name] = median_ms(lambda: target(frames, flow, frames_n, stride), args.repeats, clock)
        print(
            f"  target {name:10s} D={target.dim:5d}  {spent[name]:8.1f} ms/batch  ({spent[name] / batch:6.2f} ms/clip)"
        )

    target = build_target(config.target.name, **config.target.options)
    model = PretrainModel(
        target.dim,
        config.model.size,
        frames_n,
        size,
        config.model.tubelet,
        config.model.patch,
        config.model.decoder_depth,
        config.model.decoder_dim,
        config.model.decoder_heads,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    grid = token_grid(frames_n, size, config.model.tubelet, config.model.patch)
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(np.stack([tube_mask(grid, config.mask.ratio, rng).reshape(-1) for _ in range(batch)]))
    video = input_frames(frames, frames_n, stride).permute(0, 4, 1, 2, 3).float() / 255
    y, valid = target(frames, flow, frames_n, stride)

    def step():
        loss, _ = target.loss(model(video, mask), y, valid, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step_ms = median_ms(step, args.repeats, clock)
    own = median_ms(lambda: target(frames, flow, frames_n, stride), args.repeats, clock)
    print(f"  step (forward + loss + backward + AdamW) {step_ms:8.1f} ms")
    print(
        f"  target {config.target.name} {config.target.options or ''} {own:.1f} ms = "
        f"{100 * own / (own + step_ms):.1f} % of step + target (goal <= 10 %)"
    )
    if config.target.name == "traj":
        exact = spent["traj exact"]
        print(f"  with the exact HOG (hog_stride=1): {exact:.1f} ms = {100 * exact / (exact + step_ms):.1f} %")

    cv2.setNumThreads(1)  # as in a data-loader worker
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_training_set(config, Path(tmp), args.videos_per_class)
        dataset = build_dataset(config, target)
        rate, videos = dataset_rate(dataset, args.clips, clock), len(dataset)
    print(
        f"  dataset: {rate:.1f} clips/s per worker ({args.clips} clips of {target.raw_span(frames_n, stride)} raw "
        f"frames from {videos} synthetic videos + motion cache; {batch / rate * 1000:.0f} ms per batch of {batch})"
    )


if __name__ == "__main__":
    main()
