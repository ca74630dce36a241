"""Downstream evaluation of a pretrained video ViT: linear probe, fine-tuning, multi-view testing.

    linear_probe("runs/demo/checkpoint.pt", "data/synthetic/train.csv", "data/synthetic/val.csv")
    finetune(load_config("finetune-demo"), "runs/demo/checkpoint.pt")
    evaluate("runs/finetune-demo/checkpoint.pt", "data/synthetic/val.csv", clips=5, crops=3)

Linear probe (SVT's protocol, which MME follows): the encoder is frozen; the
mean-pooled token features of every view of every video are computed once and
cached in the output folder, keyed by checkpoint, list and view parameters;
a linear layer on standardized features (BatchNorm without affine, with the
training set's statistics) is trained for 20 epochs by SGD with a cosine
schedule. Every training view is a training sample; validation averages the
softmax over views.

Fine-tuning (MME Tab. 9, MGM Tab. 6, i.e. VideoMAE's recipe): AdamW with
layer-wise lr decay, warm-up then cosine, drop path, mixup / cutmix with
label smoothing (soft-target cross entropy), RandAugment the same on every
frame, repeated augmentation; resumable and DDP like pretraining. The
randomness of every micro-batch (drop path, dropout, mixup) is seeded from
(seed, micro-batch, rank), and clip augmentation from (seed, epoch, sample),
so a resumed run repeats an uninterrupted one exactly.

Testing: `clips x crops` views per video, softmax averaged over the views;
top-1, top-5, per-class accuracy, confusion matrix. Videos that fail to read
are skipped and counted; accuracies are over the videos that were read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from motionmae.common.lists import Item, ListError
from motionmae.common.tally import VideoTally
from motionmae.config import AugmentConfig, FinetuneConfig, config_from_dict
from motionmae.data.datasets import ClipDataset, ClipSpec, RandAugment, TrainAugment
from motionmae.data.shards import ShardStream, clip_dataset, epoch_loader, read_items, single_pass_loader
from motionmae.models import checkpoints
from motionmae.models.checkpoints import CheckpointError
from motionmae.models.vit import VideoClassifier, VisionTransformer
from motionmae.train.pretrain import (Distributed, RunVideos, SampleLog, adamw, apply_gradients, check_finite,
                                      cosine_schedule, mean_over_ranks, normalize_video, open_run_folder, param_groups,
                                      setup_distributed)


# ---------------------------------------------------------------- scores and accuracy


@dataclass
class Scores:
    """Class probabilities of the videos that were read, averaged over their views."""

    probs: torch.Tensor  # float (N_read, C), in list order
    labels: torch.Tensor  # int64 (N_read,)
    videos: VideoTally  # read and skipped, with reasons


def labelled(items: list[Item], source) -> list[Item]:
    unlabelled = [i for i in items if i.label < 0]
    if unlabelled:
        raise ListError(f"{source}: {len(unlabelled)} of {len(items)} videos have no label "
                        f"(first: {unlabelled[0].path}); evaluation needs `path label` lines")
    return items


def check_labels(items: list[Item], num_classes: int, source) -> None:
    bad = [i for i in items if i.label >= num_classes]
    if bad:
        raise ListError(f"{source}: label {bad[0].label} of {bad[0].path} is out of range for a "
                        f"{num_classes}-class model")


def accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Top-1 / top-5 (fractions), per-class top-1 and the confusion matrix (rows: true, columns: predicted)."""
    if len(labels) == 0:
        raise ListError("no video could be read, so there is no accuracy to report")
    top = probs.topk(min(5, probs.shape[1]), dim=1).indices
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    totals = confusion.sum(1)
    return {
        "top1": (top[:, 0] == labels).float().mean().item(),
        "top5": (top == labels[:, None]).any(1).float().mean().item(),
        "per_class": [confusion[c, c].item() / totals[c].item() if totals[c] else None for c in range(num_classes)],
        "confusion": confusion.tolist(),
    }


def _loader(dataset, batch_size: int, workers: int, env: Distributed):
    """Test-time loader over this rank's share of the videos."""
    return single_pass_loader(dataset, batch_size, workers, env.device.type == "cuda", env.rank, env.world)


def _gather(parts: list, env: Distributed) -> list:
    """Concatenate every rank's list (rank 0's first)."""
    if env.world == 1:
        return parts
    everything = [None] * env.world
    dist.all_gather_object(everything, parts)
    return [x for rank_parts in everything for x in rank_parts]


@torch.no_grad()
def predict(model: nn.Module, dataset: ClipDataset | ShardStream, env: Distributed, batch_size: int = 4,
            workers: int = 2, progress: bool = True, desc: str = "evaluate") -> Scores:
    """Softmax of `model` (video (B, 3, T, H, W) -> logits) averaged over the views of every video."""
    model.eval()
    use_amp = env.device.type == "cuda"
    results = []  # (position, probs (C,), label) per video read
    videos = VideoTally(len(dataset))
    loader = _loader(dataset, batch_size, workers, env)
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not (progress and env.main), dynamic_ncols=True):
        videos.update(batch)
        ok = batch["ok"]
        frames = batch["frames"][ok]  # (B_ok, V, T, S, S, 3)
        if len(frames):
            video = normalize_video(frames.flatten(0, 1).to(env.device, non_blocking=True))
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(video)
            probs = logits.float().softmax(-1).view(len(frames), frames.shape[1], -1).mean(1).cpu()
            results += zip(batch["video"][ok].tolist(), probs, batch["label"][ok])
    read = sorted(_gather(results, env), key=lambda r: r[0])
    merged = VideoTally(len(dataset))
    for part in _gather([videos], env):
        merged.merge(part)
    num_classes = read[0][1].shape[0] if read else 0
    return Scores(torch.stack([r[1] for r in read]) if read else torch.zeros(0, num_classes),
                  torch.stack([r[2] for r in read]) if read else torch.zeros(0, dtype=torch.int64), merged)


def class_names(list_path, num_classes: int) -> list[str]:
    """Names from `classes.txt` beside the list (one a line), else `class i`."""
    path = Path(list_path)
    names_file = (path if path.is_dir() else path.parent) / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if len(names) == num_classes:
            return names
    return [f"class {i}" for i in range(num_classes)]


# ---------------------------------------------------------------- linear probe


def probe_encoder(state: dict, source, frames: int, img_size: int,
                  model_size: str | None = None) -> tuple[VisionTransformer, dict]:
    """The frozen encoder of one of our checkpoints for clips of `frames` x `img_size`^2 (any size: the
    position table is computed); returns it and its (size, tubelet, patch).

    The model size comes from the checkpoint's config unless `model_size` is given; a size that
    does not fit the weights is a `CheckpointError` listing the keys that differ.
    """
    weights = checkpoints.encoder_state(state, source)
    recorded = (state.get("config") or {}).get("model", {})
    arch = {"size": model_size or recorded.get("size"), "tubelet": recorded.get("tubelet", 2),
            "patch": recorded.get("patch", 16)}
    if arch["size"] is None:
        raise CheckpointError(f"{source}: records no model size; give one (--model-size)")
    encoder = VisionTransformer(arch["size"], frames, img_size, arch["tubelet"], arch["patch"],
                                final_norm="norm.weight" in weights)
    checkpoints.load_state_dict_strict(encoder, weights, f"{source} (encoder)")
    return encoder.eval().requires_grad_(False), arch


FEATURE_FORMAT = 2  # part of the feature files' key: bump when what `clip_features` stores changes


def _feature_key(checkpoint: Path, items: list[Item], spec: ClipSpec, views: tuple[int, int], arch: dict) -> str:
    """Hash of what the features depend on: checkpoint file, videos and labels, view parameters, model."""
    stat = checkpoint.resolve().stat()
    parts = [FEATURE_FORMAT, str(checkpoint.resolve()), stat.st_size, stat.st_mtime_ns,
             [(str(i.path), i.label) for i in items], asdict(spec), list(views), arch]
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def clip_features(encoder: VisionTransformer, dataset: ClipDataset | ShardStream, env: Distributed,
                  cache_file: Path, batch_size: int, workers: int, progress: bool, desc: str) -> tuple[dict, bool]:
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
    result = {"features": features, "labels": labels, "ok": ok, "paths": [str(i.path) for i in dataset.items],
              "videos": videos.state()}
    checkpoints.atomic_save(result, cache_file)
    return result, False


def train_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = 20, lr: float = 0.1,
                 batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0) -> nn.Sequential:
    """Linear classifier on features x (N, D): BatchNorm without affine (the data's statistics) + linear,
    SGD with momentum 0.9 and a cosine schedule; lr is for a batch of 256 (scaled linearly)."""
    norm = nn.BatchNorm1d(x.shape[1], affine=False, eps=1e-6)
    norm.running_mean.copy_(x.mean(0))
    norm.running_var.copy_(x.var(0))
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


def linear_probe(checkpoint, train_list, val_list, out=None, epochs: int = 20, lr: float = 0.1,
                 batch_size: int = 256, weight_decay: float = 0.0, frames: int | None = None,
                 stride: int | None = None, sampling: str = "dense", size: int | None = None,
                 short_side: int | None = None, train_views: tuple[int, int] = (1, 1),
                 val_views: tuple[int, int] = (1, 1), model_size: str | None = None, device: str = "auto",
                 workers: int = 2, feature_batch: int = 8, seed: int = 0, progress: bool = True) -> dict:
    """Linear probe of a frozen encoder; returns (and writes to OUT/linear-probe.json) the results.

    Clip parameters (`frames`, `stride`, `size`, `short_side`) default to those the checkpoint
    was trained with; views are (temporal clips, spatial crops). `out` defaults to
    `<checkpoint folder>/linear-probe`; features are cached in `out/features/`.
    Result keys: top1, top5 (fractions of the videos read), per_class, confusion, train_top1,
    videos: {split: `VideoTally.to_dict()`: videos read and skipped, with reasons},
    features: {split: {"file", "cached", "seconds"}}.
    """
    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.parent / "linear-probe"
    state = checkpoints.load(checkpoint)
    recorded = (state.get("config") or {}).get("data", {})
    spec = ClipSpec(frames or recorded.get("frames", 16), sampling, stride or recorded.get("stride", 4),
                    size or recorded.get("size", 224), short_side or recorded.get("short_side", 256))
    encoder, arch = probe_encoder(state, checkpoint, spec.frames, spec.size, model_size)
    env = setup_distributed(device)
    results = {}
    splits = {}
    for split, source, (clips, crops) in (("train", train_list, train_views), ("val", val_list, val_views)):
        items = labelled(read_items(source), source)
        dataset = clip_dataset(items, spec, clips=clips, crops=crops)
        cache_file = out / "features" / f"{split}-{_feature_key(checkpoint, items, spec, (clips, crops), arch)}.pt"
        started = time.perf_counter()
        splits[split], cached = clip_features(encoder, dataset, env, cache_file, feature_batch, workers, progress,
                                              f"features {split}")
        results[split] = {"file": str(cache_file), "cached": cached, "seconds": time.perf_counter() - started}
    train, val = splits["train"], splits["val"]
    num_classes = 1 + max(int(train["labels"].max()), int(val["labels"].max()))
    views = train["features"].shape[1]
    x = train["features"][train["ok"]].flatten(0, 1)  # every view a sample
    y = train["labels"][train["ok"]].repeat_interleave(views)
    if len(x) == 0:
        raise ListError(f"{train_list}: no video could be read")
    classifier = train_linear(x, y, num_classes, epochs, lr, batch_size, weight_decay, seed)
    train_top1 = (classifier(x).argmax(1) == y).float().mean().item()
    v = val["features"][val["ok"]]
    probs = classifier(v.flatten(0, 1)).softmax(-1).view(len(v), v.shape[1], -1).mean(1)
    report = accuracy(probs, val["labels"][val["ok"]], num_classes)
    report.update({
        "train_top1": train_top1, "videos": {s: VideoTally.from_state(splits[s]["videos"]).to_dict() for s in splits},
        "features": results,
        "checkpoint": str(checkpoint), "model": arch, "clip": asdict(spec), "train_views": list(train_views),
        "val_views": list(val_views), "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "class_names": class_names(val_list, num_classes),
    })
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear-probe.json").write_text(json.dumps(report, indent=1))
    return report


# ---------------------------------------------------------------- fine-tuning


def build_classifier(config: FinetuneConfig, num_classes: int) -> VideoClassifier:
    m, d = config.model, config.data
    return VideoClassifier(num_classes, m.size, d.frames, d.size, m.tubelet, m.patch, m.drop_path, m.head_dropout)


def layer_decay_groups(model: VideoClassifier, weight_decay: float, layer_decay: float) -> list[dict]:
    """Parameter groups with `lr_scale = layer_decay ** (depth + 1 - layer)`: the patch embedding is
    layer 0, block i is layer i + 1, fc_norm and head are layer depth + 1 (scale 1); weight decay
    per `param_groups` (none on norms, biases and position tables)."""
    layers = [model.encoder.patch_embed, *model.encoder.blocks, nn.ModuleList([model.fc_norm, model.head])]
    groups = []
    for i, layer in enumerate(layers):
        scale = layer_decay ** (len(layers) - 1 - i)
        groups += [{**group, "lr_scale": scale} for group in param_groups(layer, weight_decay) if group["params"]]
    return groups


def build_optimizer(model: VideoClassifier, config: FinetuneConfig, lr: float) -> torch.optim.AdamW:
    """AdamW whose groups start at `lr * lr_scale` (the scheduler multiplies these)."""
    o = config.optim
    groups = layer_decay_groups(model, o.weight_decay, o.layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return adamw(groups, lr, o.betas)


def mix_batch(video: torch.Tensor, labels: torch.Tensor, num_classes: int, aug: AugmentConfig,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix of a batch with its reverse (timm's batch mode) and label-smoothed soft targets.

    video (B, 3, T, H, W); labels (B,). Returns the mixed video and targets (B, C) whose rows sum
    to 1. CutMix pastes the same box into every frame; its weight is the box's exact area.
    """
    smooth = aug.label_smoothing
    onehot = torch.full((len(labels), num_classes), smooth / num_classes, device=video.device)
    onehot.scatter_(1, labels[:, None], 1 - smooth + smooth / num_classes)
    lam = 1.0
    if (aug.mixup > 0 or aug.cutmix > 0) and rng.random() < aug.mix_prob:
        if aug.cutmix > 0 and (aug.mixup <= 0 or rng.random() < aug.switch_prob):
            H, W = video.shape[-2:]
            cut = math.sqrt(1 - rng.beta(aug.cutmix, aug.cutmix))
            cy, cx = int(rng.integers(H)), int(rng.integers(W))
            y0, y1 = np.clip([cy - int(H * cut) // 2, cy + int(H * cut) // 2], 0, H)
            x0, x1 = np.clip([cx - int(W * cut) // 2, cx + int(W * cut) // 2], 0, W)
            video = video.clone()
            video[..., y0:y1, x0:x1] = video.flip(0)[..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
        else:
            lam = float(rng.beta(aug.mixup, aug.mixup))
            video = video * lam + video.flip(0) * (1 - lam)
    return video, onehot * lam + onehot.flip(0) * (1 - lam)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def load_pretrained(model: VideoClassifier, path) -> None:
    """Encoder weights of our pretraining (or fine-tuning) checkpoint into the classifier's encoder;
    the pretraining encoder's final norm is dropped (the classifier normalizes after pooling)."""
    state = checkpoints.load(path)
    weights = {k: v for k, v in checkpoints.encoder_state(state, path).items() if not k.startswith("norm.")}
    try:
        checkpoints.load_state_dict_strict(model.encoder, weights, f"{path} (encoder)")
    except CheckpointError as err:
        size = (state.get("config") or {}).get("model", {}).get("size")
        hint = f"; it holds a ViT-{size}: set model.size={size}" if size and size != model.encoder.size else ""
        raise CheckpointError(f"{err}{hint}") from None


@dataclass
class FinetuneResult:
    checkpoint: Path  # the final checkpoint (written by rank 0)
    model: VideoClassifier  # this process's trained model
    steps: int
    val: dict | None  # the last validation: val_top1, val_top5, val_videos, step
    videos: VideoTally  # the training list's videos read and skipped over the run


def finetune(config: FinetuneConfig, pretrained=None, resume: str | None = None,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune the encoder of `pretrained` (a checkpoint path; None: random initialization) per `config`.

    `resume`: None, "auto" (the run folder's checkpoint, if any) or a checkpoint path; resuming
    ignores `pretrained`. Writes OUT/checkpoint.pt, OUT/metrics.jsonl (training loss per
    `log_every` steps, validation every `eval_every` epochs with its videos read and skipped
    ("val_videos"), the training videos read and skipped ("videos", see `pretrain.RunVideos`)) and
    OUT/config.yaml.
    """
    env = setup_distributed(config.run.device)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    d, a, o = config.data, config.aug, config.optim
    out = Path(config.run.out)
    train_items = labelled(read_items(d.train), d.train)
    val_items = labelled(read_items(d.val), d.val)
    num_classes = d.num_classes or 1 + max(i.label for i in train_items + val_items)
    check_labels(train_items, num_classes, d.train)
    check_labels(val_items, num_classes, d.val)

    spec = ClipSpec(d.frames, d.sampling, d.stride, d.size, d.short_side)
    randaug = RandAugment(a.randaug_ops, a.randaug_magnitude, a.randaug_std) if a.randaug_ops else None
    augment = TrainAugment(tuple(a.crop_area), tuple(a.crop_aspect), a.flip, randaug)
    dataset = clip_dataset(train_items, spec, augment, seed=config.run.seed, repeats=a.repeats)
    val_set = clip_dataset(val_items, spec)
    loader, sampler = epoch_loader(dataset, o.batch_size, config.run.seed, env.rank, env.world, d.workers,
                                   env.device.type == "cuda")

    torch.manual_seed(config.run.seed)  # the head's initialization
    model = build_classifier(config, num_classes)
    checkpoint_path = out / "checkpoint.pt"
    resume_from = checkpoint_path if resume == "auto" else resume
    resuming = resume_from is not None and (resume != "auto" or checkpoint_path.exists())
    if pretrained is not None and not resuming:
        load_pretrained(model, pretrained)
    model.to(env.device)
    lr = o.base_lr * o.batch_size * o.accum_steps * env.world / 256
    optimizer = build_optimizer(model, config, lr)
    steps_per_epoch = max(1, len(sampler) // o.accum_steps)
    total_steps = o.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_schedule(o.warmup_epochs * steps_per_epoch, total_steps, o.min_lr / lr))
    step, val, state = 0, None, None
    if resuming:
        state = checkpoints.load_training_state(resume_from, ("model", "optimizer", "scheduler", "step"))
        checkpoints.load_state_dict_strict(model, state["model"], str(resume_from))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, val = state["step"], state.get("val")
    ddp = DistributedDataParallel(model) if env.world > 1 else model
    use_amp = config.run.amp and env.device.type == "cuda"
    videos = RunVideos(len(train_items), env, state)

    def save():
        read = videos.gathered()
        if env.main:
            checkpoints.atomic_save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "epoch": step / steps_per_epoch,
                "config": config.to_dict(), "num_classes": num_classes, "val": val, "videos": read.state(),
                "pretrained": None if pretrained is None else str(pretrained),
            }, checkpoint_path)
        if env.world > 1:
            dist.barrier()

    def validate() -> dict:
        scores = predict(model, val_set, env, o.batch_size, d.workers, progress=False)
        result = accuracy(scores.probs, scores.labels, num_classes)
        model.train()
        return {"step": step, "epoch": step / steps_per_epoch, "val_top1": result["top1"],
                "val_top5": result["top5"], "val_videos": scores.videos.to_dict()}

    log = open_run_folder(out, config, step, env)
    samples = SampleLog(out, env.rank, step) if config.run.log_samples else None
    last_step = min(total_steps, config.run.max_steps or total_steps)
    bar = tqdm(total=last_step, initial=step, desc="finetune", unit="step", disable=not (progress and env.main),
               dynamic_ncols=True)
    model.train()
    while step < last_step:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch, skip_batches=(step % steps_per_epoch) * o.accum_steps)
        started, clips, micro = time.perf_counter(), 0, 0
        for batch in loader:
            seed = (config.run.seed, step * o.accum_steps + micro, env.rank)
            torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))  # drop path, dropout
            videos.update(batch)
            if samples is not None:
                samples.write(step + 1, epoch, batch)
            video = normalize_video(batch["frames"].to(env.device, non_blocking=True))
            labels = batch["label"].to(env.device, non_blocking=True)
            video, targets = mix_batch(video, labels, num_classes, a, np.random.default_rng(seed))
            micro += 1
            sync = micro % o.accum_steps == 0
            with ddp.no_sync() if env.world > 1 and not sync else contextlib.nullcontext():
                with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = ddp(video)
                loss = soft_cross_entropy(logits.float(), targets)
                check_finite(loss, step, epoch, checkpoint_path)
                (loss / o.accum_steps).backward()
            clips += len(labels) * env.world
            if not sync:
                continue
            apply_gradients(model, optimizer, scheduler, o.clip_grad)
            step += 1
            bar.update(1)
            if step % config.run.log_every == 0 or step == last_step:
                value = mean_over_ranks(loss, env)
                rate = clips / (time.perf_counter() - started)
                record = {"step": step, "epoch": epoch, "loss": value.item(),
                          "lr": max(g["lr"] for g in optimizer.param_groups), "clips_per_s": rate}
                if log is not None:
                    log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", clips_s=f"{rate:.1f}")
            epoch_end = step % steps_per_epoch == 0
            if epoch_end or step == last_step:
                videos.log(log, step, epoch, last=step == last_step)
            due = config.run.eval_every and epoch_end and (step // steps_per_epoch) % config.run.eval_every == 0
            if due or step == last_step:
                val = validate()
                if log is not None:
                    log.write(val)
                skipped = val["val_videos"]["skipped"]
                bar.write(f"step {step}: val top-1 {val['val_top1']:.1%}, top-5 {val['val_top5']:.1%}"
                          + (f" ({skipped} videos skipped)" if skipped else ""))
            if step % config.run.checkpoint_every == 0 or epoch_end or step == last_step:
                save()
            if step >= last_step or epoch_end:
                break
    bar.close()
    read = videos.gathered()
    if env.world > 1:
        dist.destroy_process_group()
    return FinetuneResult(checkpoint_path, model, step, val, read)


# ---------------------------------------------------------------- multi-view test


def load_classifier(path) -> tuple[VideoClassifier, FinetuneConfig]:
    """The classifier of one of our fine-tuning checkpoints, and its config."""
    state = checkpoints.load(path)
    if not isinstance(state, dict) or (state.get("config") or {}).get("task") != "finetune":
        raise CheckpointError(f"{path}: not a fine-tuning checkpoint (no classifier head); fine-tune it first "
                              f"(`motionmae finetune`) or probe it (`motionmae linear-probe`)")
    config = config_from_dict(state["config"])
    model = build_classifier(config, state.get("num_classes") or config.data.num_classes)
    checkpoints.load_state_dict_strict(model, state["model"], str(path))
    return model, config


def evaluate(checkpoint, val_list, clips: int | None = None, crops: int | None = None, out=None,
             batch_size: int = 4, device: str = "auto", workers: int = 2, progress: bool = True) -> dict:
    """Multi-view test of a fine-tuned checkpoint; returns (and writes to OUT/evaluate.json) the results
    and draws OUT/confusion.png. `clips` / `crops` default to the checkpoint's config; `out` to
    `<checkpoint folder>/evaluate`. Result keys: top1, top5, per_class, confusion, views, clips, crops,
    videos (`VideoTally.to_dict()`: read and skipped, with reasons), class_names, checkpoint, figure."""
    from motionmae.evaluation.visualize import confusion_figure, save_png

    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.parent / "evaluate"
    model, config = load_classifier(checkpoint)
    d = config.data
    clips, crops = clips or d.test_clips, crops or d.test_crops
    items = labelled(read_items(val_list), val_list)
    num_classes = model.head.out_features
    check_labels(items, num_classes, val_list)
    env = setup_distributed(device)
    dataset = clip_dataset(items, ClipSpec(d.frames, d.sampling, d.stride, d.size, d.short_side),
                           clips=clips, crops=crops)
    scores = predict(model.to(env.device), dataset, env, batch_size, workers, progress)
    report = accuracy(scores.probs, scores.labels, num_classes)
    names = class_names(val_list, num_classes)
    report.update({"views": clips * crops, "clips": clips, "crops": crops, "videos": scores.videos.to_dict(),
                   "class_names": names, "checkpoint": str(checkpoint), "figure": str(out / "confusion.png")})
    if env.main:
        title = (f"{checkpoint.parent.name}: top-1 {report['top1']:.1%}, top-5 {report['top5']:.1%} "
                 f"({len(scores.labels)} videos, {clips}x{crops} views)")
        save_png(out / "confusion.png", confusion_figure(np.array(report["confusion"]), names, title))
        (out / "evaluate.json").write_text(json.dumps(report, indent=1))
    return report
