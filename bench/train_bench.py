"""One pretraining step: motionmae vs Hugging Face transformers' VideoMAEForPreTraining.

    .venv/bin/python -m bench.train_bench [--steps 5] [--threads 2] [--rounds 3]

Same config for all (`bench.speed.TRAIN`; ours eager and under torch.compile): ViT-S, 112 px, 16 frames,
tube masking 0.9, decoder 4 blocks, batch 8, fp32 on CPU, same thread count; a step
is forward, normalized-pixel loss, backward and AdamW. Each side runs in its own
freshly spawned process (same imports) so peak memory (max RSS) is its own. Also
prints the share of a step spent building MME trajectory targets from real frames
and flow. transformers is a benchmark extra (`make bench` installs it);
`motionmae bench speed` runs the same comparison beside the others.
"""

import argparse

import numpy as np
import torch

from bench.speed import TRAIN, compare_train, real_frames, tube_masks
from bench.timing import in_fresh_process, machine_line, median_seconds


def target_share(steps: int, thread_count: int) -> dict:
    """Seconds per batch building MME trajectory targets vs a whole step (target + model + optimizer)."""
    from motionmae.models.vit import PretrainModel, normalize_video, token_grid
    from motionmae.motion.flow import video_flow
    from motionmae.motion.targets import build_target, input_frames
    from motionmae.train.optim import adamw, param_groups

    torch.set_num_threads(thread_count)
    c, stride = TRAIN, 2
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

    return {"target_s": median_seconds(build, steps), "step_s": median_seconds(step, steps)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="the sides take turns this many times (median)")
    args = parser.parse_args()
    print(f"machine: {machine_line()}")
    print(f"config: {TRAIN}, fp32, {args.threads} threads, median of {args.steps} steps after 1 warm-up")
    compare_train(TRAIN, args.steps, args.threads, args.rounds)
    share = in_fresh_process(target_share, args.steps, args.threads)
    print(
        f"  MME target build {share['target_s'] * 1e3:.0f} ms of a {share['step_s'] * 1e3:.0f} ms step "
        f"= {share['target_s'] / share['step_s']:.1%} (goal <= 10%)"
    )


if __name__ == "__main__":
    main()
