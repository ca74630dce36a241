"""Target-building time per batch on CPU, and its share of a pretraining step.

    .venv/bin/python bench/targets_bench.py [--config demo] [--batch 16] [--repeats 5] [--threads 2]

Builds every target (traj and the baselines) on one batch of random frames and
smooth random flow at the config's clip geometry (frames, stride, crop size), and
times one pretraining step of the config's model (forward, target_loss, backward,
AdamW) on the same batch. Prints the machine, the medians over `--repeats` runs and
traj's share of step + target (goal: <= 10 % at the demo config).
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from motionmae.config import load_config
from motionmae.masking import tube_mask
from motionmae.models import PretrainModel, token_grid
from motionmae.targets import TARGETS, build_target, input_frames


def machine() -> str:
    return f"{platform.platform()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs"


def clip_batch(batch, span, size, seed=0):
    """Random frames uint8 (B, span, S, S, 3) and smooth random flow (B, span-1, S, S, 2) of a few px."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, span, size, size, 3), generator=g, dtype=torch.uint8)
    coarse = torch.randn(batch * (span - 1), 2, max(size // 16, 1), max(size // 16, 1), generator=g) * 2
    flow = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return frames, flow.view(batch, span - 1, 2, size, size).permute(0, 1, 3, 4, 2).contiguous()


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help="preset or YAML file giving the clip geometry and model")
    parser.add_argument("--batch", type=int, default=None, help="clips per batch (default: the config's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    frames_n, stride, size = config.data.frames, config.data.stride, config.data.size
    batch = args.batch or config.optim.batch_size
    print(f"machine: {machine()} | torch {torch.__version__} | {args.threads} threads | load {os.getloadavg()[0]:.2f}")
    print(f"config: {args.config}: {batch} clips x {frames_n} frames at stride {stride}, {size} px, "
          f"ViT-{config.model.size}, mask {config.mask.kind} {config.mask.ratio}; median of {args.repeats}")

    targets = {name: build_target(name) for name in TARGETS}
    span = max(t.raw_span(frames_n, stride) for t in targets.values())
    frames, flow = clip_batch(batch, span, size)
    spent = {}
    for name, target in targets.items():
        spent[name] = median_ms(lambda: target(frames, flow, frames_n, stride), args.repeats)
        print(f"  target {name:6s} D={target.dim:5d}  {spent[name]:8.1f} ms/batch  ({spent[name] / batch:6.2f} ms/clip)")

    target = build_target(config.target.name, **config.target.options)
    model = PretrainModel(target.dim, config.model.size, frames_n, size, config.model.tubelet, config.model.patch,
                          config.model.decoder_depth, config.model.decoder_dim, config.model.decoder_heads)
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

    step_ms = median_ms(step, args.repeats)
    own = spent.get(config.target.name) or median_ms(lambda: target(frames, flow, frames_n, stride), args.repeats)
    print(f"  step (forward + loss + backward + AdamW) {step_ms:8.1f} ms; "
          f"target {config.target.name} {own:.1f} ms = {100 * own / (own + step_ms):.1f} % of step + target (goal <= 10 %)")


if __name__ == "__main__":
    main()
