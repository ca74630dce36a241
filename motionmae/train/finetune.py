"""Fine-tuning a pretrained encoder with a classification head (MME Tab. 9, MGM Tab. 6: VideoMAE's recipe).

    finetune(load_config("finetune-demo"), "runs/demo/checkpoint.pt")

AdamW with layer-wise lr decay, warm-up then cosine, drop path, mixup / cutmix with
label smoothing (soft-target cross entropy), RandAugment the same on every
frame, repeated augmentation; trained by the shared `engine` (DDP, resume,
checkpoints, logging), with a validation every `run.eval_every` epochs. Clip
augmentation is seeded from (seed, epoch, sample); drop path and mixup draw from
the generators the engine seeds and restores.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from motionmae.config import AugmentConfig, FinetuneConfig, config_from_dict
from motionmae.data.datasets import ClipSpec, RandAugment, TrainAugment
from motionmae.data.shards import clip_dataset, epoch_loader, read_items
from motionmae.models import checkpoints
from motionmae.models.checkpoints import CheckpointError
from motionmae.models.vit import VideoClassifier, normalize_video
from motionmae.train.engine import Engine, TrainResult
from motionmae.train.optim import adamw, param_groups
from motionmae.train.scores import accuracy, check_labels, labelled, predict


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


def mix_batch(
    video: torch.Tensor, labels: torch.Tensor, num_classes: int, aug: AugmentConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
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
        raise type(err)(f"{err}{hint}") from None


def finetune(config: FinetuneConfig, pretrained=None, resume: str | None = None, progress: bool = True) -> TrainResult:
    """Fine-tune the encoder of `pretrained` (a checkpoint path; None: random initialization) per `config`.

    `resume`: None, "auto" (the run folder's checkpoint, if any) or a checkpoint path (see `engine`);
    resuming ignores `pretrained`. Writes OUT/checkpoint.pt (with "num_classes" and "pretrained"),
    OUT/metrics.jsonl (as `engine` describes, plus a validation record every `eval_every` epochs and
    at the end: val_top1, val_top5 and the videos read and skipped, "val_videos") and OUT/config.yaml.
    """
    engine = Engine(config, "finetune", resume)
    env = engine.env
    d, a, o = config.data, config.aug, config.optim
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
    loader, sampler = epoch_loader(
        dataset, o.batch_size, config.run.seed, env.rank, env.world, d.workers, env.device.type == "cuda"
    )

    model = build_classifier(config, num_classes)
    if pretrained is not None and engine.state is None:
        load_pretrained(model, pretrained)
    model.to(env.device)

    def loss_of_batch(model, batch: dict) -> tuple[torch.Tensor, dict]:
        video = normalize_video(batch["frames"].to(env.device, non_blocking=True))
        labels = batch["label"].to(env.device, non_blocking=True)
        mix_rng = np.random.default_rng(int(torch.randint(2**62, ())))
        video, targets = mix_batch(video, labels, num_classes, a, mix_rng)
        with engine.autocast():
            logits = model(video)
        return soft_cross_entropy(logits.float(), targets), {}

    def validate(step: int) -> dict:
        scores = predict(model, val_set, env, o.batch_size, d.workers, progress=False)
        result, videos = accuracy(scores.probs, scores.labels, num_classes), scores.videos.to_dict()
        if env.main:
            tqdm.write(
                f"step {step}: val top-1 {result['top1']:.1%}, top-5 {result['top5']:.1%}"
                + (f" ({videos['skipped']} videos skipped)" if videos["skipped"] else "")
            )
        return {"val_top1": result["top1"], "val_top5": result["top5"], "val_videos": videos}

    return engine.fit(
        model,
        build_optimizer(model, config, engine.lr),
        loader,
        sampler,
        loss_of_batch,
        listed=len(train_items),
        validate=validate,
        eval_every=config.run.eval_every,
        progress=progress,
        extras={"num_classes": num_classes, "pretrained": None if pretrained is None else str(pretrained)},
    )


def load_classifier(path) -> tuple[VideoClassifier, FinetuneConfig]:
    """The classifier of one of our fine-tuning checkpoints, and its config."""
    state = checkpoints.load(path)
    if not isinstance(state, dict) or (state.get("config") or {}).get("task") != "finetune":
        raise CheckpointError(
            f"{path}: not a fine-tuning checkpoint (no classifier head); fine-tune it first "
            f"(`motionmae finetune`) or probe it (`motionmae linear-probe`)"
        )
    config = config_from_dict(state["config"])
    model = build_classifier(config, state.get("num_classes") or config.data.num_classes)
    checkpoints.load_state_dict_strict(model, state["model"], str(path))
    return model, config
