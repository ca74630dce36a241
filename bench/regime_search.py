"""The demo-regime search: pretraining or a supervised reference on synthetic videos rendered into RAM.

    .venv/bin/python -m bench.regime_search train --mode mme --flow dis-none --mask random [--steps 1500]
    .venv/bin/python -m bench.regime_search train --mode vit|cnn [--steps 800]
    .venv/bin/python -m bench.regime_search flow [--size 32] [--texture 3 8]

No files, no codec, no motion cache: every run renders its videos with motionmae.data.synthetic
(the working tree's generator, or --generator COMMIT's; --videos-per-class train videos and a fifth as many val
videos per class, --size px x --frames frames), computes their flow, keeps both in RAM (and in
bench/out/regime-data-<hash>.pt for the next run), and trains in one process. Minutes per
run, to find a regime before measuring it with the real pipeline (`motionmae demo`).

flow (--flow): "true" (the generator's ground truth), "dis" (DIS with the motion cache's
    camera compensation), "dis-none" (DIS, no compensation); --flow-scale 2 renders and
    computes flow at twice the size, then area-resizes frames and flow down.
train: --mode mme (trajectory target: --traj-len steps, --cell px cells, traj_norm none,
    position part only unless --shape, whose HOG part gets weight 1 against --position-weight)
    or pixel (VideoMAE's target), both on a ViT of --dim x --depth (--heads) with a one-block
    decoder of --decoder-dim; --mode vit (the same ViT with a classification head) or cnn
    (bench/demo_diagnostics.py's small 3D CNN) with labels. Clips: --clip-frames frames at
    --stride from a random start, full frame; masks --mask at --ratio; AdamW (betas 0.9, 0.95),
    --warmup steps then cosine to 1 %; --batch clips a step. Every --eval-every steps: train
    loss, and val loss beside the zero predictor's (middle clips, fixed masks) or val top-1.
    Pretraining ends with a linear probe (evaluate.train_linear, 20 and 100 epochs) on the
    encoder's mean-pooled tokens: 3 clips of every train video, the middle clip of every val video.
flow (command): per flow kind, on 24 videos: the objects' true speed, the flow's end-point
    error inside objects, its mean length on the background (2 px or more from any object),
    the CPU time per video, and the trajectory target's energy on objects vs background.
"""

import argparse
import hashlib
import json
import math
import multiprocessing
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bench.demo_diagnostics import small_cnn
from bench.timing import machine_line
from motionmae.data import synthetic
from motionmae.models import vit as models
from motionmae.models.vit import normalize_video
from motionmae.motion.flow import FlowParams, video_flow
from motionmae.motion.masking import MaskGenerator
from motionmae.motion.targets import build_target, input_frames
from motionmae.train.optim import cosine_schedule, param_groups
from motionmae.train.probe import train_linear

VAL_OFFSET = 100_000  # val videos are indices VAL_OFFSET.. of each class: never a train video
GENERATORS = {"": synthetic}  # --generator COMMIT: the synthetic module as it was at that commit


def generator(commit: str):
    """The synthetic module of the working tree (""), or of a git commit (e.g. 8b9d52c: version 1)."""
    if commit not in GENERATORS:
        for path in ("motionmae/data/synthetic.py", "motionmae/synthetic.py"):  # where it was before the layout
            shown = subprocess.run(
                ["git", "show", f"{commit}:{path}"], capture_output=True, text=True, cwd=Path(__file__).parent
            )
            if shown.returncode == 0:
                break
        shown.check_returncode()
        source = shown.stdout
        module = types.ModuleType(f"synthetic_{commit}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(source, f"synthetic.py@{commit}", "exec"), module.__dict__)
        GENERATORS[commit] = module
    return GENERATORS[commit]


def render(job) -> tuple[int, np.ndarray, np.ndarray]:
    """(label, frames uint8 (T, S, S, 3), flow float16 (T-1, S, S, 2)) of one video."""
    label, index, size, frames, seed, flow, scale, texture, commit = job
    source = generator(commit)
    if texture is not None:
        source.TEXTURE = texture
    video, truth = source.render_video(label, index, size * scale, frames, seed)
    if flow == "true":
        field = source.true_flow(truth)
    else:
        field = video_flow(video, FlowParams(compensation="flow" if flow == "dis" else "none"))
    if scale > 1:
        video = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in video])
        field = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in field]) / scale
    return label, video, field.astype(np.float16)


def rendered(args, per_class: int, offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames (N, T, S, S, 3) uint8, flow (N, T-1, S, S, 2) float16, labels (N,); cached in bench/out."""
    texture = tuple(args.texture) if args.texture else None
    key = json.dumps(
        [
            per_class,
            offset,
            args.size,
            args.frames,
            args.data_seed,
            args.flow,
            args.flow_scale,
            texture,
            args.generator or Path(synthetic.__file__).read_text(),
        ]
    )
    path = Path("bench/out") / f"regime-data-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    if path.is_file():
        return torch.load(path)
    jobs = [
        (label, offset + i, args.size, args.frames, args.data_seed, args.flow, args.flow_scale, texture, args.generator)
        for label in range(len(synthetic.CLASSES))
        for i in range(per_class)
    ]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        out = pool.map(render, jobs, chunksize=16)
    data = (
        torch.from_numpy(np.stack([o[1] for o in out])),
        torch.from_numpy(np.stack([o[2] for o in out])),
        torch.tensor([o[0] for o in out]),
    )
    path.parent.mkdir(exist_ok=True)
    torch.save(data, path)
    return data


def cmd_train(args):
    started = time.time()
    train = rendered(args, args.videos_per_class, 0)
    val = rendered(args, max(1, args.videos_per_class // 5), VAL_OFFSET)
    print(
        f"data: {len(train[2])} train / {len(val[2])} val videos, {args.size} px x {args.frames} frames, "
        f"flow {args.flow} (x{args.flow_scale}), {time.time() - started:.0f} s",
        flush=True,
    )
    pretraining = args.mode in ("mme", "pixel")
    if args.mode == "pixel":
        target = build_target("pixel", tubelet=args.tubelet, patch=args.patch)
    else:
        target = build_target(
            "traj",
            tubelet=args.tubelet,
            patch=args.patch,
            cell=args.cell,
            traj_len=args.traj_len,
            traj_norm="none",
            shape=args.shape,
            position_weight=args.position_weight,
        )
    span = target.raw_span(args.clip_frames, args.stride) if pretraining else (args.clip_frames - 1) * args.stride + 1
    room = args.frames - span
    if room < 0:
        raise SystemExit(f"clips need {span} frames; videos have {args.frames}")
    grid = models.token_grid(args.clip_frames, args.size, args.tubelet, args.patch)
    masks = MaskGenerator(args.mask, args.ratio, grid)
    models.SIZES["search"] = models.ViTSize(args.dim, args.depth, args.heads, args.decoder_dim, args.heads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if pretraining:
        model = models.PretrainModel(target.dim, "search", args.clip_frames, args.size, args.tubelet, args.patch, 1)
    elif args.mode == "vit":
        model = models.VideoClassifier(
            len(synthetic.CLASSES), "search", args.clip_frames, args.size, args.tubelet, args.patch
        )
    else:
        model = small_cnn(len(synthetic.CLASSES))
    optimizer = torch.optim.AdamW(param_groups(model, 0.05), lr=args.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(args.warmup, args.steps, 0.01))

    def batch(data, indices, starts):
        frames = torch.stack([data[0][i, s : s + span] for i, s in zip(indices, starts)])
        flow = torch.stack([data[1][i, s : s + span - 1] for i, s in zip(indices, starts)]).float()
        return frames, flow, data[2][indices]

    def loss_of(frames, flow, labels, mask):
        video = normalize_video(input_frames(frames, args.clip_frames, args.stride))
        if not pretraining:
            logits = model(video)
            return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).sum()
        with torch.no_grad():
            y, valid = target(frames, flow, args.clip_frames, args.stride)
        loss, _ = target.loss(model(video, mask), y, valid, mask)
        return loss, target.loss(torch.zeros_like(y), y, valid, mask)[0]

    val_rng = np.random.default_rng(123)
    val_masks = torch.from_numpy(np.stack([masks(val_rng) for _ in range(len(val[2]))]))
    val_starts = np.full(len(val[2]), room // 2)

    def evaluate() -> str:
        model.eval()
        totals = np.zeros(2)
        with torch.no_grad():
            for chunk in np.array_split(np.arange(len(val[2])), max(1, len(val[2]) // 128)):
                a, b = loss_of(*batch(val, chunk, val_starts[chunk]), val_masks[chunk])
                totals += [a.item() * len(chunk), b.item() * (len(chunk) if pretraining else 1)]
        model.train()
        if not pretraining:
            return f"val top-1 {totals[1] / len(val[2]):.1%}"
        return (
            f"val loss {totals[0] / len(val[2]):.4f}, zero predictor {totals[1] / len(val[2]):.4f} "
            f"(ratio {totals[0] / totals[1]:.3f})"
        )

    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.mode}: {parameters:.2f} M parameters, {math.prod(grid)} tokens, span {span} frames", flush=True)
    started, cpu, losses = time.time(), time.process_time(), []
    for step in range(1, args.steps + 1):
        indices = rng.integers(len(train[2]), size=args.batch)
        mask = torch.from_numpy(np.stack([masks(rng) for _ in indices])) if pretraining else None
        loss, _ = loss_of(*batch(train, indices, rng.integers(room + 1, size=args.batch)), mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            seconds = time.process_time() - cpu
            print(
                f"step {step}: train loss {np.mean(losses[-args.eval_every :]):.4f}, {evaluate()}; "
                f"{time.time() - started:.0f} s, {seconds:.0f} s CPU ({step * args.batch / seconds:.0f} clips "
                f"per CPU-second)",
                flush=True,
            )
    if pretraining:
        probe(args, model.encoder.eval(), train, val, batch, room)


def probe(args, encoder, train, val, batch, room: int) -> None:
    """Linear probe on mean-pooled tokens: 3 clips (start, middle, end) of every train video, the middle of val."""

    def features(data, starts):
        out = []
        with torch.no_grad():
            for start in starts:
                chunks = np.array_split(np.arange(len(data[2])), max(1, len(data[2]) // 128))
                out.append(
                    torch.cat(
                        [
                            encoder(
                                normalize_video(
                                    input_frames(
                                        batch(data, c, np.full(len(c), start))[0], args.clip_frames, args.stride
                                    )
                                )
                            ).mean(1)
                            for c in chunks
                        ]
                    )
                )
        return torch.stack(out, 1)  # (N, views, D)

    x_train, x_val = features(train, [0, round(room / 2), room]), features(val, [room // 2])
    y_train = train[2].repeat_interleave(3)
    for epochs in (20, 100):
        classifier = train_linear(x_train.flatten(0, 1), y_train, len(synthetic.CLASSES), epochs=epochs)
        fit = (classifier(x_train.flatten(0, 1)).argmax(1) == y_train).float().mean().item()
        top1 = (classifier(x_val[:, 0]).argmax(1) == val[2]).float().mean().item()
        print(f"linear probe, {epochs} epochs: train {fit:.1%}, val top-1 {top1:.1%}", flush=True)


def cmd_flow(args):
    texture = tuple(args.texture) if args.texture else None
    kinds = [("dis", 1), ("dis-none", 1), ("dis-none", 2)]
    target = build_target("traj", tubelet=2, patch=8, cell=8, traj_len=4, traj_norm="none", shape=False)
    span = target.raw_span(8, 2)
    for kind, scale in kinds:
        speed, error, background, seconds, energy = [], [], [], [], np.zeros((2, 2))
        for i in range(24):
            label = i % len(synthetic.CLASSES)
            started = time.process_time()
            _, video, flow = render((label, 500 + i, args.size, args.frames, 0, kind, scale, texture, ""))
            seconds.append(time.process_time() - started)
            _, truth = synthetic.render_video(label, 500 + i, args.size * scale, args.frames)
            true = synthetic.true_flow(truth)
            if scale > 1:
                true = np.stack([cv2.resize(f, (args.size,) * 2, interpolation=cv2.INTER_AREA) for f in true]) / scale
            ids = truth["mask"][:-1] if scale == 1 else truth["mask"][:-1, ::scale, ::scale]
            inside = np.stack([cv2.erode((m > 0).astype(np.uint8), np.ones((3, 3))) for m in ids]) > 0
            away = np.stack([cv2.dilate((m > 0).astype(np.uint8), np.ones((5, 5))) for m in ids]) == 0
            flow = flow.astype(np.float32)
            speed.append(np.linalg.norm(true, axis=-1)[inside].mean())
            error.append(np.linalg.norm(flow - true, axis=-1)[inside].mean())
            background.append(np.linalg.norm(flow, axis=-1)[away].mean())
            start = (args.frames - span) // 2
            frames = torch.from_numpy(video[start : start + span])[None]
            on = torch.from_numpy(
                ids[start : start + span - 1 : 4][:4, 3::8, 3::8] > 0
            ).flatten()  # token centres, slice starts
            for row, field in enumerate((true, flow)):
                y, _ = target(
                    frames, torch.from_numpy(np.ascontiguousarray(field[start : start + span - 1]))[None], 8, 2
                )
                energy[row] += [y[0][on].square().sum().item(), y[0][~on].square().sum().item()]
        share = energy[:, 0] / energy.sum(1)
        print(
            f"{kind} x{scale}: object speed {np.mean(speed):.2f} px/frame, end-point error on objects "
            f"{np.mean(error):.2f}, background |flow| {np.mean(background):.3f} px, {1000 * np.mean(seconds):.0f} ms "
            f"CPU per video; target energy on objects: true flow {share[0]:.0%}, this flow {share[1]:.0%}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "flow"):
        p = sub.add_parser(name)
        p.add_argument("--size", type=int, default=32)
        p.add_argument("--frames", type=int, default=24)
        p.add_argument(
            "--texture",
            type=float,
            nargs=2,
            default=None,
            help="background texture contrast range (of 255; default: the generator's)",
        )
    p = sub.choices["train"]
    p.add_argument("--mode", choices=["mme", "pixel", "vit", "cnn"], default="mme")
    p.add_argument("--flow", choices=["true", "dis", "dis-none"], default="dis-none")
    p.add_argument("--flow-scale", type=int, default=1)
    p.add_argument("--videos-per-class", type=int, default=100)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument(
        "--generator",
        default="",
        metavar="COMMIT",
        help="the synthetic module of this git commit (8b9d52c: version 1) instead of the working tree's",
    )
    p.add_argument("--clip-frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--tubelet", type=int, default=2)
    p.add_argument("--cell", type=int, default=8)
    p.add_argument("--traj-len", type=int, default=4)
    p.add_argument("--shape", action="store_true")
    p.add_argument("--position-weight", type=float, default=1.0)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--decoder-dim", type=int, default=128)
    p.add_argument("--mask", default="random")
    p.add_argument("--ratio", type=float, default=0.75)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (one runs best on a shared machine)")
    args = parser.parse_args()
    print(f"machine: {machine_line()}", file=sys.stderr)
    torch.set_num_threads(getattr(args, "threads", 1))
    {"train": cmd_train, "flow": cmd_flow}[args.command](args)


if __name__ == "__main__":
    main()
