"""Fine-tuning a pretrained encoder with a classification head (MME Tab. 9, MGM Tab. 6: VideoMAE's recipe).

    finetune(load_config("finetune-demo"), "runs/demo/checkpoint.pt")

AdamW with layer-wise lr decay, warm-up then cosine, drop path, mixup / cutmix with
label smoothing (soft-target cross entropy), RandAugment the same on every
frame, repeated augmentation; resumable and DDP like pretraining. The
randomness of every micro-batch (drop path, dropout, mixup) is seeded from
(seed, micro-batch, rank), and clip augmentation from (seed, epoch, sample),
so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from motionmae.common.tally import VideoTally
from motionmae.config import AugmentConfig, FinetuneConfig, config_from_dict
from motionmae.data.datasets import ClipSpec, RandAugment, TrainAugment
from motionmae.data.shards import clip_dataset, epoch_loader, read_items
from motionmae.models import checkpoints
from motionmae.models.checkpoints import CheckpointError
from motionmae.models.vit import VideoClassifier, normalize_video
from motionmae.train.distributed import mean_over_ranks, setup_distributed
from motionmae.train.optim import adamw, apply_gradients, cosine_schedule, param_groups
from motionmae.train.pretrain import RunVideos, SampleLog, check_finite, open_run_folder
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
        raise type(err)(f"{err}{hint}") from None


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
    ddp: Any = DistributedDataParallel(model) if env.world > 1 else model  # no_sync() in DDP
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
