"""Pretraining loop: one process or `torchrun` DDP, resumable, with bf16 autocast on CUDA.

    run = pretrain(load_config("demo"))

Per step: a batch of raw spans (frames + flow + masks, made in data-loader
workers) goes to the device; the target builder turns it into per-token targets
there; the model sees the input frames and predicts the targets of masked tokens;
the loss is the builder's masked MSE. Checkpoints hold everything needed to
continue exactly: model, optimizer, scheduler, scaler, RNG states, epoch, step.

metrics.jsonl gets a record per `log_every` steps (loss and its parts, lr,
clips/s; rank 0's mean seconds per step spent waiting for data and in all,
"data_wait_s" and "step_s", their ratio on the progress bar as "wait 12%"; with
MGM masks also "mask_sources": the samples whose mask followed each guidance
source since the previous record, e.g. {"mv": 6, "diff": 2}),
and a record of the videos read and skipped ("videos", `tally.VideoTally.to_dict()`)
at an epoch's end when the counts changed and at the last step. When MGM cannot use the
configured guidance for some clip (a codec without motion vectors, say), a
warning says so once per run. With `run.log_samples`, every process writes which videos
each of its batches held (`SampleLog`), to check what a run read.

`data.train` is a list, a folder or a shard pattern (`motionmae pack`, `motionmae.data.shards`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from motionmae.common.tally import VideoTally
from motionmae.config import Config, ConfigError, save_config
from motionmae.data.datasets import PretrainDataset
from motionmae.data.shards import ShardStream, epoch_loader, pretrain_dataset, read_items
from motionmae.errors import MotionMAEError
from motionmae.models import checkpoints
from motionmae.models.vit import PretrainModel, normalize_video, token_grid
from motionmae.motion.masking import SOURCES, MaskGenerator
from motionmae.motion.targets import build_target, input_frames
from motionmae.train.distributed import Distributed, mean_over_ranks, setup_distributed
from motionmae.train.optim import adamw, apply_gradients, cosine_schedule, param_groups

logger = logging.getLogger(__name__)


class TrainingDiverged(MotionMAEError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class MetricsLog:
    """metrics.jsonl (one JSON object per logged step) and TensorBoard when it is installed."""

    def __init__(self, out: Path, resume_step: int):
        self.path = out / "metrics.jsonl"
        if self.path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.board: Any  # a SummaryWriter, or None without tensorboard
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.board = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.board = None

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, record["step"])


class SampleLog:
    """OUT/samples-rank<r>.jsonl (`run.log_samples`): per batch of this process, the step it counts towards,
    the epoch, the positions of the videos read ("videos") and their keys when the batch has them."""

    def __init__(self, out: Path, rank: int, resume_step: int):
        self.path = out / f"samples-rank{rank}.jsonl"
        out.mkdir(parents=True, exist_ok=True)
        kept = [line for line in self.path.read_text().splitlines()
                if json.loads(line)["step"] <= resume_step] if self.path.exists() else []
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, epoch: int, batch: dict) -> None:
        record = {"step": step, "epoch": epoch, "videos": batch["video"].tolist()}
        if "key" in batch:
            record["keys"] = list(batch["key"])
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def open_run_folder(out: Path, config, step: int, env: Distributed) -> MetricsLog | None:
    """On rank 0: create the run folder, write the resolved config.yaml, open the metrics log."""
    if not env.main:
        return None
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    return MetricsLog(out, step)


def check_finite(loss: torch.Tensor, step: int, epoch: int, checkpoint: Path) -> None:
    """Stop a run whose loss is NaN or infinite, pointing at the last good checkpoint."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"loss is {loss.item()} at step {step} (epoch {epoch}); stopped, "
                               f"last good checkpoint kept at {checkpoint}")


class RunVideos:
    """The training list's videos read and skipped over a run (`tally.VideoTally`), resumed from the
    checkpoint's "videos" when it has them; written to metrics.jsonl as a "videos" record at an
    epoch's end when the counts changed, and at the last step."""

    def __init__(self, listed: int, env: Distributed, state: dict | None = None, left_out: Iterable[dict] = ()):
        self.env = env
        self.logged: dict | None = None
        self.tally = VideoTally.from_state(state["videos"]) if state and "videos" in state else VideoTally(listed)
        for entry in left_out:  # left out by the data set before training
            self.tally.skip(**entry)

    def update(self, batch: dict) -> None:
        self.tally.update(batch)

    def gathered(self) -> VideoTally:
        """The union of every process's tally (a collective call in DDP)."""
        parts: list = [self.tally]
        if self.env.world > 1:
            parts = [None] * self.env.world
            dist.all_gather_object(parts, self.tally)
        merged = VideoTally(self.tally.videos)
        for part in parts:
            merged.merge(part)
        return merged

    def log(self, log: MetricsLog | None, step: int, epoch: int, last: bool) -> None:
        counts = self.gathered().to_dict()
        if log is not None and (last or counts != self.logged):
            log.write({"step": step, "epoch": epoch, "videos": counts})
        self.logged = counts


FALLBACK_CAUSES = {  # why a configured MGM guidance source can be missing (diff never is)
    "mv": "the codec has no motion vectors (HEVC, VP9, AV1, MJPEG, ...), the clip's frames carry none, "
          "or data.shuffle_frames is on",
    "flow": "no flow is loaded for the clip (the target needs none)",
}


class DataWait:
    """Time the loop waits for the data loader against the time of a whole step: `flush` gives the
    means per optimizer step since the previous flush, seconds, {"data_wait_s", "step_s"}."""

    def __init__(self, step: int):
        self.waited, self.since, self.step = 0.0, time.perf_counter(), step

    def timed(self, loader):
        """The loader's batches, the time spent fetching each counted."""
        batches = iter(loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waited += time.perf_counter() - start
            yield batch

    def flush(self, step: int) -> dict:
        now = time.perf_counter()
        steps = max(1, step - self.step)
        record = {"data_wait_s": self.waited / steps, "step_s": (now - self.since) / steps}
        self.waited, self.since, self.step = 0.0, now, step
        return record


class MaskSources:
    """Counts the guidance source of every MGM mask (`masking.SOURCES`) between two metrics records,
    and warns once per run (rank 0) when a mask could not follow the configured source."""

    def __init__(self, prefer: str, env: Distributed):
        self.prefer, self.env = prefer, env
        self.counts: Counter[str] = Counter()
        self.warned = False

    def add(self, batch: dict) -> None:
        self.counts.update(batch["mask_source"])
        self._warn(self.counts)

    def flush(self) -> dict:
        """{source: samples} over every process since the previous flush (a collective call in DDP)."""
        counts = torch.tensor([self.counts[s] for s in SOURCES], dtype=torch.int64)
        if self.env.world > 1:
            dist.all_reduce(counts)
        self.counts = Counter()
        total = {s: int(n) for s, n in zip(SOURCES, counts) if n}
        self._warn(total)
        return total

    def _warn(self, counts: dict) -> None:
        others = sorted(s for s in counts if s != self.prefer and counts[s])
        if others and self.env.main and not self.warned:
            self.warned = True
            logger.warning("MGM masks fall back from %s to %s guidance for some clips: %s; metrics.jsonl counts "
                           "the sources per record (mask_sources)", self.prefer, " / ".join(others),
                           FALLBACK_CAUSES[self.prefer])


def build_model(config: Config, target_dim: int, parts: dict | None = None) -> PretrainModel:
    """The config's model for a target of `target_dim` outputs; `model.head: mlp` needs the target's
    `parts` (name -> slice) for its per-part heads (a single part "all" when not given)."""
    m, d = config.model, config.data
    if m.head not in ("linear", "mlp"):
        raise ValueError(f"model.head must be 'linear' or 'mlp', got {m.head!r}")
    head_parts = None
    if m.head == "mlp":
        head_parts = {name: s.stop - s.start for name, s in (parts or {"all": slice(0, target_dim)}).items()}
    return PretrainModel(target_dim, m.size, d.frames, d.size, m.tubelet, m.patch, m.decoder_depth,
                         m.decoder_dim, m.decoder_heads, m.drop_path, head_parts, m.head_hidden,
                         dict(m.head_activations))


def build_dataset(config: Config, target) -> PretrainDataset | ShardStream:
    """The training data of `data.train`: a list's videos, or a shard set's samples (`motionmae.data.shards`)."""
    d, m = config.data, config.model
    grid = token_grid(d.frames, d.size, m.tubelet, m.patch)
    masks = MaskGenerator(config.mask.kind, config.mask.ratio, grid, prefer=config.mask.guidance,
                          options=dict(config.mask.options))
    return pretrain_dataset(read_items(d.train), d, target.raw_span(d.frames, d.stride), masks,
                            seed=config.run.seed, needs_flow=target.needs_flow or masks.needs_flow,
                            reads=target.span_reads(d.frames, d.stride))


def batch_loss(model, target, batch: dict, data, device: torch.device, amp: bool = False) -> tuple[torch.Tensor, dict]:
    """Loss and its parts for one `PretrainDataset` batch: targets built on `device`, then forward.

    batch: "frames" uint8 (B, span, H, W, 3), "flow" (B, span-1, H, W, 2), "mask" bool (B, N),
    optional "cuts" bool (B, span-1);
    `data`: the config's data section (frames, stride); `amp`: bf16 autocast of the forward pass.
    """
    frames = batch["frames"].to(device, non_blocking=True)
    flow = batch["flow"].to(device, non_blocking=True) if target.needs_flow else None
    mask = batch["mask"].to(device, non_blocking=True)
    cuts = batch["cuts"].to(device, non_blocking=True) if "cuts" in batch else None
    with torch.no_grad():
        y, valid = target(frames, flow, data.frames, data.stride, cuts)
    video = normalize_video(input_frames(frames, data.frames, data.stride))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        pred = model(video, mask)
    return target.loss(pred.float(), y, valid, mask)


@dataclass
class PretrainResult:
    checkpoint: Path  # the final checkpoint (written by rank 0)
    model: PretrainModel  # this process's trained model
    steps: int
    videos: VideoTally  # the training list's videos read and skipped over the run


def pretrain(config: Config, resume: str | None = None) -> PretrainResult:
    """Train per `config`. `resume`: None, "auto" (the run folder's checkpoint, if any) or a checkpoint path."""
    env = setup_distributed(config.run.device)
    out = Path(config.run.out)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    torch.manual_seed(config.run.seed)
    target = build_target(config.target.name, tubelet=config.model.tubelet, patch=config.model.patch,
                          **config.target.options)
    dataset = build_dataset(config, target)
    repeats = config.data.repeats
    if config.optim.batch_size % repeats:
        raise ConfigError(f"optim.batch_size {config.optim.batch_size} is not a multiple of data.repeats {repeats}")
    if repeats > 1 and isinstance(dataset, ShardStream):
        raise ConfigError("data.repeats > 1 is not supported with shards yet; use a list, or data.repeats=1")
    loader, sampler = epoch_loader(dataset, config.optim.batch_size // repeats, config.run.seed, env.rank,
                                   env.world, config.data.workers, env.device.type == "cuda")

    model = build_model(config, target.dim, target.parts).to(env.device)
    o = config.optim
    global_batch = o.batch_size * o.accum_steps * env.world
    lr = o.base_lr * global_batch / 256
    optimizer = adamw(param_groups(model, o.weight_decay), lr, o.betas)
    steps_per_epoch = max(1, len(sampler) // o.accum_steps)
    total_steps = o.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_schedule(o.warmup_epochs * steps_per_epoch, total_steps, o.min_lr / lr))
    use_amp = config.run.amp and env.device.type == "cuda"
    scaler = torch.amp.GradScaler(env.device.type, enabled=False)  # bf16 needs no loss scaling

    step, state = 0, None
    checkpoint_path = out / "checkpoint.pt"
    resume_from = checkpoint_path if resume == "auto" else resume
    if resume_from is not None and (resume != "auto" or checkpoint_path.exists()):
        state = checkpoints.load_training_state(resume_from, ("model", "optimizer", "scheduler", "scaler", "rng",
                                                              "step"))
        checkpoints.load_state_dict_strict(model, state["model"], str(resume_from))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        checkpoints.set_rng_state(state["rng"][env.rank] if env.rank < len(state["rng"]) else state["rng"][0])
        step = state["step"]
    ddp: Any = DistributedDataParallel(model) if env.world > 1 else model  # or either of them compiled
    if config.run.compile:
        ddp = torch.compile(ddp)  # the same parameters; `model` is still what is saved
    videos = RunVideos(dataset.listed, env, state, dataset.left_out)
    needs_motion = dataset.masks is not None and dataset.masks.needs_motion
    sources = MaskSources(config.mask.guidance, env) if needs_motion else None

    def save():
        read = videos.gathered()
        rng = [None] * env.world
        if env.world > 1:
            dist.all_gather_object(rng, checkpoints.rng_state())
        else:
            rng = [checkpoints.rng_state()]
        if env.main:
            checkpoints.atomic_save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                "step": step, "epoch": step / steps_per_epoch, "config": config.to_dict(),
                "target": {"name": config.target.name, "dim": target.dim}, "videos": read.state(),
            }, checkpoint_path)
        if env.world > 1:
            dist.barrier()

    log = open_run_folder(out, config, step, env)
    samples = SampleLog(out, env.rank, step) if config.run.log_samples else None
    last_step = min(total_steps, config.run.max_steps or total_steps)
    bar = tqdm(total=last_step, initial=step, desc="pretrain", unit="step", disable=not env.main, dynamic_ncols=True)
    wait = DataWait(step)
    while step < last_step:
        epoch = step // steps_per_epoch
        sampler.set_epoch(epoch, skip_batches=(step % steps_per_epoch) * o.accum_steps)
        started, clips, micro = time.perf_counter(), 0, 0
        for batch in wait.timed(loader):
            micro += 1
            sync = micro % o.accum_steps == 0
            videos.update(batch)
            if samples is not None:
                samples.write(step + 1, epoch, batch)
            if sources is not None:
                sources.add(batch)
            with ddp.no_sync() if env.world > 1 and not sync else contextlib.nullcontext():
                loss, parts = batch_loss(ddp, target, batch, config.data, env.device, use_amp)
                check_finite(loss, step, epoch, checkpoint_path)
                (loss / o.accum_steps).backward()
            clips += batch["frames"].shape[0] * env.world
            if not sync:
                continue
            apply_gradients(model, optimizer, scheduler, o.clip_grad)
            step += 1
            bar.update(1)
            if step % config.run.log_every == 0 or step == last_step:
                values = mean_over_ranks(torch.stack([loss, *parts.values()]), env)
                rate = clips / (time.perf_counter() - started)
                record = {"step": step, "epoch": epoch, "loss": values[0].item(),
                          **{k: v.item() for k, v in zip(parts, values[1:])},
                          "lr": optimizer.param_groups[0]["lr"], "clips_per_s": rate, **wait.flush(step)}
                if sources is not None:
                    record["mask_sources"] = sources.flush()
                if log is not None:
                    log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", clips_s=f"{rate:.1f}",
                                wait=f"{record['data_wait_s'] / max(record['step_s'], 1e-9):.0%}")
            if step % steps_per_epoch == 0 or step == last_step:
                videos.log(log, step, epoch, last=step == last_step)
            if step % config.run.checkpoint_every == 0 or step == last_step:
                save()
            if step >= last_step or step % steps_per_epoch == 0:
                break
    bar.close()
    read = videos.gathered()
    if env.world > 1:
        dist.destroy_process_group()
    return PretrainResult(checkpoint_path, model, step, read)
