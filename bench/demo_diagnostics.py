"""What the demo's encoder learns, and whether its data set can be learnt in the demo's budget.

    .venv/bin/python -m bench.demo_diagnostics targets [--data data/synthetic] [--cache cache/demo] [--set k=v ...]
    .venv/bin/python -m bench.demo_diagnostics truth   [--data ...] [--cache ...]
    .venv/bin/python -m bench.demo_diagnostics zero    CHECKPOINT [--split val|train] [--clips N]
    .venv/bin/python -m bench.demo_diagnostics baseline pixel|videomae|... [--target-only] [--set k=v ...]
    .venv/bin/python -m bench.demo_diagnostics supervised [--model cnn|vit] [--steps 1500] [--batch 64]
        [--lr 1e-3] [--data ...] [--set k=v ...]

targets: how much of the class a linear classifier reads from the pretraining targets
    themselves, pooled over one clip per video (mean over tokens, mean per time slice,
    mean |value|): an upper-bound-like figure for what a linear probe on an encoder
    that encoded its own targets could reach. `--set target.options.traj_norm=token`
    etc. pick the target variant (demo config otherwise).
truth: trajectory targets (raw px) against the generator's ground truth on the
    translating classes: per-step displacement and error of points on the primary
    object, and the flow noise carried by points on the still background.
zero: the loss of a pretrained checkpoint on the middle clip of every validation video
    (or --clips N of them; --split train for the training list), with masks seeded per
    video, beside the loss of predicting zero and of copying each masked token's target
    from the same token at the nearest visible time. A model that learnt nothing sits at
    the zero predictor. For a pixel target, "zero" is the per-patch mean: its trivial predictor.
baseline: the demo (its data, cache, model, clips, schedule) pretrained as a variant of
    `bench quality` says (e.g. pixel: VideoMAE's target in the demo's recipe; videomae: pixels,
    tube 0.9, decoder 4; --target-only: the variant with the demo's mask and decoder) into
    runs/demo-METHOD[-target], then `zero` on val and the demo's probe.
supervised: the references of the demo with labels, in its budget (steps x batch clip
    samples): a small 3D CNN (4 conv-BN-ReLU-maxpool blocks, 0.29 M parameters) or the
    demo preset's ViT with VideoMAE's classification head, trained from scratch on clips
    cut like the demo's pretraining samples (the preset's frames, stride, size, crops;
    a random start per sample) from videos decoded once into RAM; AdamW, one-cycle lr up
    to --lr; validation top-1 on the middle clip of every val video every --eval-every steps.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

from bench.quality import METHODS, method_config
from bench.timing import machine_line
from motionmae.common.lists import read_list
from motionmae.config import config_from_dict, load_config
from motionmae.data.datasets import MemoryVideo, PretrainDataset, augment_frames, multiscale_crop
from motionmae.demo import PROBE, demo_cache_params
from motionmae.io.cache import MotionCache
from motionmae.models import checkpoints
from motionmae.models.vit import VideoClassifier, normalize_video, token_grid
from motionmae.motion.masking import MaskGenerator
from motionmae.motion.targets import build_target
from motionmae.train.pretrain import batch_loss, build_model, pretrain
from motionmae.train.probe import linear_probe


def demo_config(args):
    overrides = [f"data.train={args.data}/train.csv", f"data.val={args.data}/val.csv", f"data.cache={args.cache}"]
    return load_config("demo", overrides + args.set)


def centre_samples(config, target, list_path):
    """One deterministic sample per video (middle span, full centre square): yields (item, sample dict)."""
    d, m = config.data, config.model
    masks = MaskGenerator(config.mask.kind, config.mask.ratio, token_grid(d.frames, d.size, m.tubelet, m.patch))
    dataset = PretrainDataset(read_list(list_path), d, target.raw_span(d.frames, d.stride), masks, train=False)
    for item in dataset.items:
        sample, _ = dataset.sample(item, np.random.default_rng(0))
        yield item, sample


def pooled_target_features(config, target, list_path):
    """(videos, F) pooled position targets and (videos,) labels."""
    d, m = config.data, config.model
    slices = d.frames // m.tubelet
    features, labels = [], []
    for item, sample in centre_samples(config, target, list_path):
        y, valid = target(sample["frames"][None], sample["flow"][None], d.frames, d.stride)
        position = (y * valid)[0, :, target.parts["position"]].reshape(slices, -1, target.parts["position"].stop)
        features.append(torch.cat([position.mean((0, 1)), position.mean(1).flatten(), position.abs().mean((0, 1))]))
        labels.append(item.label)
    return torch.stack(features), torch.tensor(labels)


def linear_accuracy(x_train, y_train, x_val, y_val, classes: int, steps: int = 500) -> tuple[float, float]:
    """Softmax regression on standardized features (Adam, light weight decay): (train, val) accuracy."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(x_train.shape[1], classes)
    optimizer = torch.optim.Adam(layer.parameters(), 1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(x_train), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return [(layer(x).argmax(1) == y).float().mean().item() for x, y in ((x_train, y_train), (x_val, y_val))]


def cmd_targets(args):
    config = demo_config(args)
    target = build_target(config.target.name, **config.target.options)
    x_train, y_train = pooled_target_features(config, target, config.data.train)
    x_val, y_val = pooled_target_features(config, target, config.data.val)
    classes = int(max(y_train.max(), y_val.max())) + 1
    train, val = linear_accuracy(x_train, y_train, x_val, y_val, classes)
    print(
        f"target {config.target.name} {config.target.options}: linear classifier on pooled targets, "
        f"train {train:.1%}, val {val:.1%} (chance {1 / classes:.1%})"
    )


def cmd_truth(args):
    config = demo_config(args)
    target = build_target("traj", traj_norm="none", shape=False)
    d = config.data
    cells, cell = d.size // target.cell, target.cell  # trajectories start at the centres of 8 px cells
    steps = target.traj_len
    on_object, error, background = [], [], []
    for item, sample in centre_samples(config, target, d.train):
        name = str(item.path)
        if "move_" not in name or "_then_" in name:
            continue  # translating classes: the object's displacement is its centre's
        truth = np.load(name[: -len(".mp4")] + ".npz")
        count = len(truth["center"])
        start = max(0, count - target.raw_span(d.frames, d.stride)) // 2
        y, _ = target(sample["frames"][None], sample["flow"][None], d.frames, d.stride)
        k = target.patch // cell
        grid = d.size // target.patch
        position = y[0, :, target.parts["position"]].reshape(-1, grid, grid, k, k, steps, 2).numpy()
        velocity = np.diff(truth["center"], axis=0)  # (T-1, 2) px/frame
        for j in range(position.shape[0]):
            first = start + j * config.model.tubelet * d.stride
            if first + steps >= count:
                continue
            labels = truth["mask"][first]  # 0 background, 1 primary object, 2.. others
            for row in range(cells):
                for col in range(cells):
                    traj = position[j, row // k, col // k, row % k, col % k]
                    yc, xc = row * cell + cell // 2, col * cell + cell // 2
                    if labels[yc, xc] == 1:
                        on_object.append(np.abs(velocity[first : first + steps]).mean())
                        error.append(np.abs(traj - velocity[first : first + steps]).mean())
                    elif labels[yc - 3 : yc + 4, xc - 3 : xc + 4].max() == 0:
                        background.append(np.abs(traj).mean())
    total = len(on_object) + len(background)
    print(
        f"{args.data}: {len(on_object)} object points ({len(on_object) / total:.1%}): |true step| "
        f"{np.mean(on_object):.3f} px, |target - truth| {np.mean(error):.3f} px; {len(background)} background "
        f"points: |target| {np.mean(background):.3f} px (mean |dx|, |dy| per step)"
    )


def copy_nearest_visible(y, mask, slices: int) -> torch.Tensor:
    """(B, N, D) prediction: each token's target copied from the same spatial token at the nearest visible time."""
    b, n, dim = y.shape
    y, mask = y.view(b, slices, -1, dim), mask.view(b, slices, -1)
    times = torch.arange(slices)
    distance = (times[:, None] - times[None, :]).abs().float()  # (T', T')
    pred = torch.zeros_like(y)
    for i in range(b):
        for s in range(y.shape[2]):
            visible = ~mask[i, :, s]
            if visible.any():
                nearest = distance[:, visible].argmin(1)
                pred[i, :, s] = y[i, visible.nonzero().flatten()[nearest], s]
    return pred.view(b, n, dim)


def zero_losses(checkpoint, split: str = "val", clips: int = 0, cache: str | None = None) -> dict:
    """Loss of a checkpoint, of the zero predictor and of copying the nearest visible time, averaged
    over the middle clips of `split`'s videos (all, or `clips` spread over the list)."""
    state = checkpoints.load(checkpoint)
    config = config_from_dict(state["config"])
    if cache:
        config.data.cache = cache
    target = build_target(
        config.target.name, tubelet=config.model.tubelet, patch=config.model.patch, **config.target.options
    )
    d, m = config.data, config.model
    masks = MaskGenerator(
        config.mask.kind,
        config.mask.ratio,
        token_grid(d.frames, d.size, m.tubelet, m.patch),
        prefer=config.mask.guidance,
        options=dict(config.mask.options),
    )
    dataset = PretrainDataset(
        read_list(d.val if split == "val" else d.train),
        d,
        target.raw_span(d.frames, d.stride),
        masks,
        seed=config.run.seed,
        needs_flow=target.needs_flow,
        train=False,
    )
    model = build_model(config, target.dim)
    model.load_state_dict(state["model"])
    model.eval()
    picks = np.arange(len(dataset)) if clips == 0 else np.linspace(0, len(dataset) - 1, clips).astype(int)
    totals = np.zeros(3)
    for chunk in np.array_split(picks, max(1, len(picks) // 64)):
        batch = torch.utils.data.default_collate([dataset[(0, int(i))] for i in chunk])
        with torch.no_grad():
            trained, _ = batch_loss(model, target, batch, d, torch.device("cpu"))
            y, valid = target(batch["frames"], batch["flow"], d.frames, d.stride)
            zero, _ = target.loss(torch.zeros_like(y), y, valid, batch["mask"])
            copied = copy_nearest_visible(y, batch["mask"], d.frames // config.model.tubelet)
            copy, _ = target.loss(copied, y, valid, batch["mask"])
        totals += len(chunk) * np.array([trained.item(), zero.item(), copy.item()])
    trained, zero, copy = totals / len(picks)
    return {
        "step": state["step"],
        "target": config.target.name,
        "clips": len(picks),
        "trained": trained,
        "zero": zero,
        "copy": copy,
    }


def print_zero(checkpoint, split: str, r: dict) -> None:
    print(
        f"{checkpoint} (step {r['step']}, target {r['target']}): loss on {r['clips']} {split} clips (middle "
        f"span, seeded masks) {r['trained']:.4f}; predicting zero {r['zero']:.4f} (trained / zero = "
        f"{r['trained'] / r['zero']:.3f}); copying the nearest visible time {r['copy']:.4f}"
    )


def cmd_zero(args):
    print_zero(args.checkpoint, args.split, zero_losses(args.checkpoint, args.split, args.clips, args.cache))


def cmd_baseline(args):
    """The demo preset changed as a `bench quality` method says (--target-only: the demo's mask and
    decoder kept); then zero and the probe."""
    name = args.method + ("-target" if args.target_only else "")
    config = method_config(args.method, "demo", [f"run.out=runs/demo-{name}", *args.set])
    if args.target_only:
        demo = load_config("demo")
        config.mask, config.model.decoder_depth = demo.mask, demo.model.decoder_depth
    cache = MotionCache(config.data.cache, demo_cache_params(config.data.short_side))
    config.data.cache = str(cache.dir)
    print(
        f"{args.method}: target {config.target.name} {config.target.options}, {config.mask.kind} "
        f"{config.mask.ratio}, decoder depth {config.model.decoder_depth} -> {config.run.out}"
    )
    result = pretrain(config, resume="auto")
    print_zero(result.checkpoint, "val", zero_losses(result.checkpoint))
    probe = linear_probe(
        result.checkpoint,
        load_config(PROBE, [f"data.train={config.data.train}", f"data.val={config.data.val}"]),
        progress=False,
    )
    print(f"linear probe: val top-1 {probe['top1']:.1%} (train {probe['train_top1']:.1%})")


def small_cnn(classes: int) -> torch.nn.Module:
    """uint8-derived float (B, 3, T, S, S) -> logits (B, classes)."""
    layers, width = [], 3
    for out, pool in ((16, (1, 2, 2)), (32, (2, 2, 2)), (64, (2, 2, 2)), (128, (2, 2, 2))):
        layers += [
            torch.nn.Conv3d(width, out, 3, padding=1, bias=False),
            torch.nn.BatchNorm3d(out),
            torch.nn.ReLU(inplace=True),
            torch.nn.MaxPool3d(pool),
        ]
        width = out
    head = [torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(width, classes)]
    return torch.nn.Sequential(*layers, *head)


class MemoryClips:
    """Labelled clips cut like the demo's pretraining samples, from videos decoded once into RAM."""

    def __init__(self, listing, data):
        self.items, self.data = read_list(listing), data
        self.videos = [MemoryVideo(item.path, data.short_side, motion=False) for item in self.items]
        self.labels = torch.tensor([item.label for item in self.items])

    def clip(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        """uint8 (T, S, S, 3): random start, crop and flip per the config (rng), or the middle clip (None)."""
        d, video = self.data, self.videos[index]
        room = max(0, len(video) - (d.frames - 1) * d.stride - 1)
        start = int(rng.integers(room + 1)) if rng is not None else room // 2
        frames = video.read(np.minimum(start + d.stride * np.arange(d.frames), len(video) - 1)).frames
        box = multiscale_crop(
            frames.shape[1],
            frames.shape[2],
            d.size,
            d.scales,
            d.flip,
            rng or np.random.default_rng(0),
            train=rng is not None,
        )
        return augment_frames(frames, box)

    def batch(self, indices, rng=None) -> tuple[torch.Tensor, torch.Tensor]:
        clips = np.stack([self.clip(int(i), rng) for i in indices])
        return normalize_video(torch.from_numpy(clips)), self.labels[indices]


def cmd_supervised(args):
    config = demo_config(args)
    d, m = config.data, config.model
    train, val = MemoryClips(d.train, d), MemoryClips(d.val, d)
    classes = int(max(train.labels.max(), val.labels.max())) + 1
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if args.model == "cnn":
        model = small_cnn(classes)
    else:
        model = VideoClassifier(classes, m.size, d.frames, d.size, m.tubelet, m.patch)
    optimizer = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=0.05)  # lr: OneCycleLR sets it
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    arch = f"ViT-{m.size} (patch {m.patch}, tubelet {m.tubelet})" if args.model == "vit" else "small 3D CNN"
    print(
        f"{arch}, {parameters:.2f} M parameters, peak lr {args.lr}, {args.steps} steps of {args.batch} clips "
        f"({d.frames} frames at stride {d.stride}, {d.size} px); {len(train.items)} train / {len(val.items)} "
        f"val videos, chance {1 / classes:.1%}"
    )
    start, cpu, losses = time.time(), time.process_time(), []
    for step in range(1, args.steps + 1):
        model.train()
        video, label = train.batch(rng.integers(len(train.items), size=args.batch), rng)
        loss = torch.nn.functional.cross_entropy(model(video), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % args.eval_every and step != args.steps:
            continue
        model.eval()
        with torch.no_grad():
            right = sum(
                (model(v).argmax(1) == y).sum().item()
                for v, y in (val.batch(chunk) for chunk in np.array_split(np.arange(len(val.items)), 8))
            )
        print(
            f"step {step} ({step * args.batch} clips): train loss {np.mean(losses[-args.eval_every :]):.3f}, "
            f"val top-1 {right / len(val.items):.1%}, {time.time() - start:.0f} s "
            f"({time.process_time() - cpu:.0f} s CPU)",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("targets", "truth"):
        p = sub.add_parser(name)
        p.add_argument("--data", default="data/synthetic")
        p.add_argument("--cache", default="cache/demo")
        p.add_argument("--set", action="append", default=[], help="config override of the demo preset")
    baseline = sub.add_parser("baseline")
    baseline.add_argument(
        "method", choices=sorted(METHODS), help="a variant of `bench quality` (pixel: VideoMAE's target)"
    )
    baseline.add_argument(
        "--target-only",
        action="store_true",
        help="take only the method's target; keep the demo's mask and decoder (runs/demo-METHOD-target)",
    )
    baseline.add_argument("--set", action="append", default=[], help="config override of the demo preset")
    zero = sub.add_parser("zero")
    zero.add_argument("checkpoint")
    zero.add_argument("--split", choices=["val", "train"], default="val", help="the list of the checkpoint's config")
    zero.add_argument("--clips", type=int, default=0, help="clips spread over the list (0: one per video)")
    zero.add_argument("--cache", default=None, help="motion cache folder (default: the checkpoint's)")
    supervised = sub.add_parser("supervised")
    supervised.add_argument("--data", default="data/synthetic")
    supervised.add_argument("--cache", default="cache/demo", help="unused (the clips need no flow)")
    supervised.add_argument("--set", action="append", default=[], help="config override of the demo preset")
    supervised.add_argument(
        "--model",
        choices=["cnn", "vit"],
        default="cnn",
        help="small 3D CNN, or the demo preset's ViT with a classification head",
    )
    supervised.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    supervised.add_argument("--steps", type=int, default=1500)
    supervised.add_argument("--batch", type=int, default=64)
    supervised.add_argument("--eval-every", type=int, default=250)
    supervised.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {machine_line()}", file=sys.stderr)
    if "OMP_NUM_THREADS" not in os.environ:  # under load, one thread per process may run faster
        torch.set_num_threads(2)
    {
        "targets": cmd_targets,
        "truth": cmd_truth,
        "zero": cmd_zero,
        "baseline": cmd_baseline,
        "supervised": cmd_supervised,
    }[args.command](args)


if __name__ == "__main__":
    main()
