"""Why the demo's encoder learns so little: four measurements on a synthetic data set.

    .venv/bin/python bench/demo_diagnostics.py targets [--data data/synthetic] [--cache cache/motion] [--set k=v ...]
    .venv/bin/python bench/demo_diagnostics.py truth   [--data ...] [--cache ...]
    .venv/bin/python bench/demo_diagnostics.py zero    CHECKPOINT
    .venv/bin/python bench/demo_diagnostics.py supervised [--model cnn|convstem|vit|vit-convstem]
        [--patch 16] [--depth 12] [--pool mean|max] [--lr 3e-3] [--epochs 8] [--data ...]

targets: how much of the class a linear classifier reads from the pretraining targets
    themselves, pooled over one clip per video (mean over tokens, mean per time slice,
    mean |value|): an upper-bound-like figure for what a linear probe on an encoder
    that encoded its own targets could reach. `--set target.options.traj_norm=none`
    etc. pick the target variant (demo config otherwise).
truth: trajectory targets (raw px) against the generator's ground truth on the
    translating classes: per-step displacement and error of points on the primary
    object, and the flow noise carried by points on the still background.
zero: the loss of a pretrained checkpoint on 64 training clips beside the loss of
    predicting zero and of copying each masked token's target from the same token at
    the nearest visible time. A model that learnt nothing sits at the zero predictor.
supervised: is the data set learnable at all in the demo's budget? A small 3D CNN
    (4 conv blocks, 0.29 M parameters), the ViT's convolutional stem alone (mean over its
    tokens, LayerNorm, linear), our ViT-tiny classifier, or that ViT with the
    convolutional stem in place of the tubelet embedding (16 px patches); the ViT cut to
    its first --depth blocks, its tokens max-pooled with --pool max. Trained with labels
    from scratch on the demo's clips (16 frames at stride 2, 64 px, one random crop of
    50-100 % area per video, drawn once, no flip; AdamW, one-cycle lr up to --lr,
    batch 16); validation top-1 (centre clip) after every epoch.
"""

import argparse
import sys
import time

import numpy as np
import torch

from motionmae import checkpoints
from motionmae.config import config_from_dict, load_config
from motionmae.data import ClipDataset, ClipSpec, PretrainDataset, TrainAugment, read_list
from motionmae.masking import MaskGenerator
from motionmae.models import VideoClassifier, token_grid
from motionmae.pretrain import batch_loss, build_dataset, build_model, normalize_video
from motionmae.speed import machine_line
from motionmae.targets import build_target


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
    print(f"target {config.target.name} {config.target.options}: linear classifier on pooled targets, "
          f"train {train:.1%}, val {val:.1%} (chance {1 / classes:.1%})")


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
                        on_object.append(np.abs(velocity[first:first + steps]).mean())
                        error.append(np.abs(traj - velocity[first:first + steps]).mean())
                    elif labels[yc - 3:yc + 4, xc - 3:xc + 4].max() == 0:
                        background.append(np.abs(traj).mean())
    total = len(on_object) + len(background)
    print(f"{args.data}: {len(on_object)} object points ({len(on_object) / total:.1%}): |true step| "
          f"{np.mean(on_object):.3f} px, |target - truth| {np.mean(error):.3f} px; {len(background)} background "
          f"points: |target| {np.mean(background):.3f} px (mean |dx|, |dy| per step)")


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


def cmd_zero(args):
    state = checkpoints.load(args.checkpoint)
    config = config_from_dict(state["config"])
    target = build_target(config.target.name, tubelet=config.model.tubelet, patch=config.model.patch,
                          **config.target.options)
    dataset = build_dataset(config, target)
    model = build_model(config, target.dim)
    model.load_state_dict(state["model"])
    model.eval()
    picks = np.linspace(0, len(dataset) - 1, 64).astype(int)
    batch = torch.utils.data.default_collate([dataset[(0, int(i))] for i in picks])
    d = config.data
    with torch.no_grad():
        trained, _ = batch_loss(model, target, batch, d, torch.device("cpu"))
        y, valid = target(batch["frames"], batch["flow"], d.frames, d.stride)
        zero, _ = target.loss(torch.zeros_like(y), y, valid, batch["mask"])
        copied = copy_nearest_visible(y, batch["mask"], d.frames // config.model.tubelet)
        copy, _ = target.loss(copied, y, valid, batch["mask"])
    print(f"{args.checkpoint} (step {state['step']}): loss on 64 clips {trained.item():.4f}; "
          f"predicting zero {zero.item():.4f}; copying the nearest visible time {copy.item():.4f}")


def small_cnn(classes: int) -> torch.nn.Module:
    """uint8-derived float (B, 3, T, S, S) -> logits (B, classes)."""
    layers, width = [], 3
    for out, pool in ((16, (1, 2, 2)), (32, (2, 2, 2)), (64, (2, 2, 2)), (128, (2, 2, 2))):
        layers += [torch.nn.Conv3d(width, out, 3, padding=1, bias=False), torch.nn.BatchNorm3d(out),
                   torch.nn.ReLU(inplace=True), torch.nn.MaxPool3d(pool)]
        width = out
    head = [torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(width, classes)]
    return torch.nn.Sequential(*layers, *head)


class Mean(torch.nn.Module):
    """Mean over one axis, as a layer."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.mean(self.dim)


class ConvStem(torch.nn.Module):
    """Drop-in for the tubelet embedding: four 3x3x3 conv-BN-ReLU layers of stride 2 in
    space (and 2 in time in the third), then a 1x1x1 conv to the width: (B, 3, T, S, S)
    -> (B, N, D) with the tubelet grid (T/2, S/16, S/16)."""

    def __init__(self, dim: int):
        super().__init__()
        layers, width = [], 3
        for out, stride in ((24, (1, 2, 2)), (48, (1, 2, 2)), (96, (2, 2, 2)), (192, (1, 2, 2))):
            layers += [torch.nn.Conv3d(width, out, 3, stride, 1, bias=False), torch.nn.BatchNorm3d(out),
                       torch.nn.ReLU(inplace=True)]
            width = out
        self.convs = torch.nn.Sequential(*layers, torch.nn.Conv3d(width, dim, 1))

    def forward(self, video, mask=None):
        return self.convs(video).flatten(2).transpose(1, 2)


class MaxPooled(torch.nn.Module):
    """A VideoClassifier whose tokens are max-pooled instead of averaged: logits (B, classes)."""

    def __init__(self, classifier: VideoClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, video):
        c = self.classifier
        return c.head(c.fc_norm(c.encoder(video).amax(1)))


def cmd_supervised(args):
    spec = ClipSpec(frames=16, stride=2, size=64, short_side=64)
    train_items, val_items = read_list(f"{args.data}/train.csv"), read_list(f"{args.data}/val.csv")
    classes = max(i.label for i in train_items) + 1
    train = ClipDataset(train_items, spec, TrainAugment(area=(0.5, 1.0), flip=False))
    loaders = {"train": torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, num_workers=1, drop_last=True),
               "val": torch.utils.data.DataLoader(ClipDataset(val_items, spec), batch_size=32, num_workers=1)}
    torch.manual_seed(0)
    if args.model == "cnn":
        model = small_cnn(classes)
    elif args.model == "convstem":
        model = torch.nn.Sequential(ConvStem(192), Mean(1), torch.nn.LayerNorm(192), torch.nn.Linear(192, classes))
    else:
        model = VideoClassifier(classes, "tiny", spec.frames, spec.size, patch=args.patch)
        if args.model == "vit-convstem":
            model.encoder.patch_embed = ConvStem(model.encoder.dim)
        model.encoder.blocks = model.encoder.blocks[:args.depth]
        if args.pool == "max":
            model = MaxPooled(model)
    optimizer = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=0.05)  # lr: OneCycleLR sets it
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.epochs * len(loaders["train"]))
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    vit = f" (patch {args.patch}, depth {args.depth}, {args.pool} pool)" if args.model.startswith("vit") else ""
    print(f"{args.model}{vit}, lr {args.lr}, "
          f"{parameters:.2f} M parameters, {len(train_items)} train / {len(val_items)} val videos, "
          f"chance {1 / classes:.1%}")
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        losses = []
        for batch in loaders["train"]:
            loss = torch.nn.functional.cross_entropy(model(normalize_video(batch["frames"])), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            right = sum((model(normalize_video(b["frames"].flatten(0, 1))).argmax(1) == b["label"]).sum().item()
                        for b in loaders["val"])
        print(f"epoch {epoch + 1}: train loss {np.mean(losses):.3f}, val top-1 {right / len(val_items):.1%}, "
              f"{time.time() - start:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("targets", "truth"):
        p = sub.add_parser(name)
        p.add_argument("--data", default="data/synthetic")
        p.add_argument("--cache", default="cache/motion")
        p.add_argument("--set", action="append", default=[], help="config override of the demo preset")
    sub.add_parser("zero").add_argument("checkpoint")
    supervised = sub.add_parser("supervised")
    supervised.add_argument("--data", default="data/synthetic")
    supervised.add_argument("--model", choices=["cnn", "convstem", "vit", "vit-convstem"], default="cnn")
    supervised.add_argument("--patch", type=int, default=16, help="ViT patch side (px)")
    supervised.add_argument("--depth", type=int, default=12, help="ViT blocks kept (of ViT-tiny's 12)")
    supervised.add_argument("--pool", choices=["mean", "max"], default="mean", help="ViT token pooling")
    supervised.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    supervised.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    if args.command == "supervised" and args.model in ("convstem", "vit-convstem") and args.patch != 16:
        parser.error("the convolutional stem makes 16 px patches; drop --patch")
    print(f"machine: {machine_line()}", file=sys.stderr)
    torch.set_num_threads(2)
    {"targets": cmd_targets, "truth": cmd_truth, "zero": cmd_zero, "supervised": cmd_supervised}[args.command](args)


if __name__ == "__main__":
    main()
