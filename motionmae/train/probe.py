"""Linear probe of a frozen encoder (SVT's protocol, which MME follows).

    linear_probe("runs/demo/checkpoint.pt", load_config("my-probe.yaml", ["data.workers=0"], task="linear-probe"))

The encoder is frozen; the mean-pooled token features of every view of every video are
computed once and cached in the output folder, keyed by checkpoint, list and view
parameters; a linear layer on standardized features (BatchNorm without affine, with the
training set's statistics) is trained for 20 epochs by SGD with a cosine schedule. Every
training view is a training sample; validation averages the softmax over views.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from motionmae.common.lists import Item, ListError
from motionmae.common.tally import VideoTally
from motionmae.config import ProbeConfig
from motionmae.data.datasets import ClipDataset, ClipSpec
from motionmae.data.shards import ShardStream, clip_dataset, read_items, single_pass_loader
from motionmae.models import checkpoints
from motionmae.models.checkpoints import CheckpointError
from motionmae.models.vit import VisionTransformer, normalize_video
from motionmae.train.distributed import Distributed, setup_distributed
from motionmae.train.scores import accuracy, class_names, labelled


def probe_encoder(
    state: dict, source, frames: int, img_size: int, model_size: str | None = None
) -> tuple[VisionTransformer, dict]:
    """The frozen encoder of one of our checkpoints for clips of `frames` x `img_size`^2 (any size: the
    position table is computed); returns it and its (size, tubelet, patch).

    The model size comes from the checkpoint's config unless `model_size` is given; a size that
    does not fit the weights is a `CheckpointError` listing the keys that differ.
    """
    weights = checkpoints.encoder_state(state, source)
    recorded = (state.get("config") or {}).get("model", {})
    arch = {
        "size": model_size or recorded.get("size"),
        "tubelet": recorded.get("tubelet", 2),
        "patch": recorded.get("patch", 16),
    }
    if arch["size"] is None:
        raise CheckpointError(f"{source}: records no model size; give one (model.size)")
    encoder = VisionTransformer(
        arch["size"], frames, img_size, arch["tubelet"], arch["patch"], final_norm="norm.weight" in weights
    )
    checkpoints.load_state_dict_strict(encoder, weights, f"{source} (encoder)")
    return encoder.eval().requires_grad_(False), arch


FEATURE_FORMAT = 2  # part of the feature files' key: bump when what `clip_features` stores changes


def _feature_key(checkpoint: Path, items: list[Item], spec: ClipSpec, views: tuple[int, int], arch: dict) -> str:
    """Hash of what the features depend on: checkpoint file, videos and labels, view parameters, model."""
    stat = checkpoint.resolve().stat()
    parts = [
        FEATURE_FORMAT,
        str(checkpoint.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
        [(str(i.path), i.label) for i in items],
        asdict(spec),
        list(views),
        arch,
    ]
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def clip_features(
    encoder: VisionTransformer,
    dataset: ClipDataset | ShardStream,
    env: Distributed,
    cache_file: Path,
    batch_size: int,
    workers: int,
    progress: bool,
    desc: str,
) -> tuple[dict, bool]:
    """Mean-pooled features of every view, from `cache_file` when it exists; returns (features, cached).

    features: {"features": float32 (N, V, D), "labels": int64 (N,), "ok": bool (N,), "paths": [str],
    "videos": `VideoTally.state()`}.
    """
    if cache_file.is_file():
        return checkpoints.load(cache_file), True
    encoder = encoder.to(env.device)
    views = dataset.clips * dataset.crops
    features = torch.zeros(len(dataset), views, encoder.dim)
    labels, ok = torch.zeros(len(dataset), dtype=torch.int64), torch.zeros(len(dataset), dtype=torch.bool)
    loader = single_pass_loader(dataset, batch_size, workers)
    videos = VideoTally(len(dataset))
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
            videos.update(batch)
            good = batch["ok"]
            rows = batch["video"][good]  # positions of the videos read
            labels[rows], ok[rows] = batch["label"][good], True
            if good.any():
                video = normalize_video(batch["frames"][good].flatten(0, 1).to(env.device))
                with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=env.device.type == "cuda"):
                    pooled = encoder(video).mean(1)
                features[rows] = pooled.float().view(int(good.sum()), views, -1).cpu()
    result = {
        "features": features,
        "labels": labels,
        "ok": ok,
        "paths": [str(i.path) for i in dataset.items],
        "videos": videos.state(),
    }
    checkpoints.atomic_save(result, cache_file)
    return result, False


def train_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    epochs: int = 20,
    lr: float = 0.1,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> nn.Sequential:
    """Linear classifier on features x (N, D): BatchNorm without affine (the data's statistics) + linear,
    SGD with momentum 0.9 and a cosine schedule; lr is for a batch of 256 (scaled linearly)."""
    norm = nn.BatchNorm1d(x.shape[1], affine=False, eps=1e-6)
    norm.running_mean, norm.running_var = x.mean(0), x.var(0)
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.normal_(head.weight, std=0.01, generator=generator)
    nn.init.zeros_(head.bias)
    classifier = nn.Sequential(norm, head).eval()  # eval: the norm keeps the whole set's statistics
    optimizer = torch.optim.SGD(head.parameters(), lr=lr * batch_size / 256, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs):
        for chunk in torch.randperm(len(x), generator=generator).split(batch_size):
            loss = F.cross_entropy(classifier(x[chunk]), y[chunk])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return classifier.requires_grad_(False)


def linear_probe(checkpoint, config: ProbeConfig | None = None, progress: bool = True) -> dict:
    """Linear probe of a frozen encoder per `config` (`task: linear-probe`; its defaults when None);
    returns (and writes to OUT/linear-probe.json) the results.

    Clip parameters (data.frames, stride, size, short_side) default to those the checkpoint
    was trained with; views are [temporal clips, spatial crops]. run.out defaults to
    `<checkpoint folder>/linear-probe`; features are cached in `out/features/`.
    Result keys: top1, top5 (fractions of the videos read), per_class, confusion, train_top1,
    videos: {split: `VideoTally.to_dict()`: videos read and skipped, with reasons},
    features: {split: {"file", "cached", "seconds"}}.
    """
    config = config or ProbeConfig()
    d, o = config.data, config.optim
    checkpoint = Path(checkpoint)
    out = Path(config.run.out) if config.run.out else checkpoint.parent / "linear-probe"
    state = checkpoints.load(checkpoint)
    recorded = (state.get("config") or {}).get("data", {})
    spec = ClipSpec(
        d.frames or recorded.get("frames", 16),
        d.sampling,
        d.stride or recorded.get("stride", 4),
        d.size or recorded.get("size", 224),
        d.short_side or recorded.get("short_side", 256),
    )
    encoder, arch = probe_encoder(state, checkpoint, spec.frames, spec.size, config.model.size)
    env = setup_distributed(config.run.device)
    results = {}
    splits = {}
    for split, source, (clips, crops) in (("train", d.train, d.train_views), ("val", d.val, d.val_views)):
        items = labelled(read_items(source), source)
        dataset = clip_dataset(items, spec, clips=clips, crops=crops)
        cache_file = out / "features" / f"{split}-{_feature_key(checkpoint, items, spec, (clips, crops), arch)}.pt"
        started = time.perf_counter()
        splits[split], cached = clip_features(
            encoder, dataset, env, cache_file, d.batch_size, d.workers, progress, f"features {split}"
        )
        results[split] = {"file": str(cache_file), "cached": cached, "seconds": time.perf_counter() - started}
    train, val = splits["train"], splits["val"]
    num_classes = 1 + max(int(train["labels"].max()), int(val["labels"].max()))
    views = train["features"].shape[1]
    x = train["features"][train["ok"]].flatten(0, 1)  # every view a sample
    y = train["labels"][train["ok"]].repeat_interleave(views)
    if len(x) == 0:
        raise ListError(f"{d.train}: no video could be read")
    classifier = train_linear(x, y, num_classes, o.epochs, o.lr, o.batch_size, o.weight_decay, config.run.seed)
    train_top1 = (classifier(x).argmax(1) == y).float().mean().item()
    v = val["features"][val["ok"]]
    probs = classifier(v.flatten(0, 1)).softmax(-1).view(len(v), v.shape[1], -1).mean(1)
    report = accuracy(probs, val["labels"][val["ok"]], num_classes)
    report.update(
        {
            "train_top1": train_top1,
            "videos": {s: VideoTally.from_state(splits[s]["videos"]).to_dict() for s in splits},
            "features": results,
            "checkpoint": str(checkpoint),
            "model": arch,
            "clip": asdict(spec),
            "train_views": list(d.train_views),
            "val_views": list(d.val_views),
            "epochs": o.epochs,
            "lr": o.lr,
            "batch_size": o.batch_size,
            "class_names": class_names(d.val, num_classes),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear-probe.json").write_text(json.dumps(report, indent=1))
    return report
