"""One pretraining step: motionmae vs Hugging Face transformers' VideoMAEForPreTraining.

    .venv/bin/python bench/train_bench.py [--steps 5] [--threads 2]

Same config for both (issue 7): ViT-S, 112 px, 16 frames, tube masking 0.9,
decoder 4 blocks, batch 8, fp32 on CPU, same thread count; a step is forward,
normalized-pixel loss, backward and AdamW. Each side runs in its own process
(same imports) so peak memory (max RSS) is its own. Also prints the share of a
step spent building MME trajectory targets from real frames and flow.
transformers is a benchmark extra (`make bench` installs it).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

CONFIG = dict(size="small", image=112, frames=16, ratio=0.9, decoder_depth=4, batch=8)


def machine() -> str:
    return f"{platform.platform()} | {platform.machine()} | {os.cpu_count()} CPUs | torch {torch.__version__}"


def tube_masks(batch: int, grid: tuple[int, int, int], ratio: float, seed: int = 0) -> torch.Tensor:
    from motionmae.masking import MaskGenerator

    generator = MaskGenerator("tube", ratio, grid)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([generator(rng) for _ in range(batch)]))


def real_frames(frames: int, size: int, batch: int) -> np.ndarray:
    """uint8 (B, T, S, S, 3): centre crops of bikes.mp4 at short side S, consecutive frames."""
    from motionmae.video import VideoReader, shipped_videos

    path = next(v for v in shipped_videos() if v.name == "bikes.mp4")
    with VideoReader(path, size) as reader:
        clips = []
        for b in range(batch):
            clip = reader.read(np.arange(frames) + 20 * b).frames
            x0 = (clip.shape[2] - size) // 2
            clips.append(clip[:, :, x0:x0 + size])
    return np.stack(clips)


def time_steps(step, steps: int) -> float:
    """Best-of median seconds per step after one warm-up step."""
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_ours(steps: int) -> dict:
    from motionmae.models import PretrainModel, token_grid
    from motionmae.pretrain import adamw, normalize_video, param_groups
    from motionmae.targets import build_target

    c = CONFIG
    target = build_target("pixel")
    model = PretrainModel(target.dim, c["size"], c["frames"], c["image"], decoder_depth=c["decoder_depth"])
    optimizer = adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95))  # as `motionmae pretrain` builds it
    frames = torch.from_numpy(real_frames(c["frames"], c["image"], c["batch"]))
    mask = tube_masks(c["batch"], token_grid(c["frames"], c["image"]), c["ratio"])

    def step():
        y, valid = target(frames, None, c["frames"], 1)
        loss, _ = target.loss(model(normalize_video(frames), mask), y, valid, mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_steps(step, steps)
    return {"clips_per_s": c["batch"] / seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_hf(steps: int) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from motionmae.models import SIZES, token_grid
    from motionmae.pretrain import adamw, normalize_video, param_groups

    c = CONFIG
    spec = SIZES[c["size"]]
    config = VideoMAEConfig(image_size=c["image"], num_frames=c["frames"], tubelet_size=2, patch_size=16,
                            hidden_size=spec.dim, num_hidden_layers=spec.depth, num_attention_heads=spec.heads,
                            intermediate_size=4 * spec.dim, decoder_hidden_size=spec.decoder_dim,
                            decoder_num_hidden_layers=c["decoder_depth"], decoder_num_attention_heads=spec.decoder_heads,
                            decoder_intermediate_size=4 * spec.decoder_dim, norm_pix_loss=True,
                            attn_implementation="sdpa")
    model = VideoMAEForPreTraining(config).train()
    optimizer = adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95))  # the same optimizer on both sides
    frames = torch.from_numpy(real_frames(c["frames"], c["image"], c["batch"]))
    mask = tube_masks(c["batch"], token_grid(c["frames"], c["image"]), c["ratio"])

    def step():
        pixels = normalize_video(frames).permute(0, 2, 1, 3, 4)  # HF wants (B, T, 3, H, W)
        loss = model(pixel_values=pixels, bool_masked_pos=mask).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = time_steps(step, steps)
    return {"clips_per_s": c["batch"] / seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def target_share(steps: int) -> dict:
    """Seconds per batch building MME trajectory targets vs a whole step (target + model + optimizer)."""
    from motionmae.flow import video_flow
    from motionmae.models import PretrainModel, token_grid
    from motionmae.pretrain import adamw, normalize_video, param_groups
    from motionmae.targets import build_target, input_frames

    c, stride = CONFIG, 2
    target = build_target("traj")
    span = target.raw_span(c["frames"], stride)
    raw = real_frames(span, c["image"], c["batch"])
    flow = torch.from_numpy(np.stack([video_flow(clip) for clip in raw]))
    frames = torch.from_numpy(raw)
    model = PretrainModel(target.dim, c["size"], c["frames"], c["image"], decoder_depth=1)
    optimizer = adamw(param_groups(model, 0.05), 1e-4, (0.9, 0.95))
    mask = tube_masks(c["batch"], token_grid(c["frames"], c["image"]), 0.7)

    def build():
        with torch.no_grad():
            return target(frames, flow, c["frames"], stride)

    def step():
        y, valid = build()
        loss, _ = target.loss(model(normalize_video(input_frames(frames, c["frames"], stride)), mask), y, valid, mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"target_s": time_steps(build, steps), "step_s": time_steps(step, steps)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", choices=["ours", "hf", "share"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.side:
        result = {"ours": run_ours, "hf": run_hf, "share": target_share}[args.side](args.steps)
        print(json.dumps(result))
        return
    print(f"machine: {machine()}")
    print(f"config: {CONFIG}, fp32, {args.threads} threads, median of {args.steps} steps after 1 warm-up")
    results = {}
    for side in ("ours", "hf", "share"):
        out = subprocess.run([sys.executable, __file__, "--side", side, "--steps", str(args.steps),
                              "--threads", str(args.threads)], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"{side} failed:\n{out.stderr[-2000:]}")
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, hf, share = results["ours"], results["hf"], results["share"]
    print(f"  motionmae   {ours['clips_per_s']:6.2f} clips/s  peak {ours['peak_mb']:7.0f} MB")
    print(f"  HF VideoMAE {hf['clips_per_s']:6.2f} clips/s  peak {hf['peak_mb']:7.0f} MB")
    print(f"  speed ratio {ours['clips_per_s'] / hf['clips_per_s']:.2f}x (goal >= 1.2), "
          f"memory ratio {ours['peak_mb'] / hf['peak_mb']:.2f} (goal <= 1)")
    print(f"  MME target build {share['target_s'] * 1e3:.0f} ms of a {share['step_s'] * 1e3:.0f} ms step "
          f"= {share['target_s'] / share['step_s']:.1%} (goal <= 10%)")


if __name__ == "__main__":
    main()
