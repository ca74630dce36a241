"""The training loop that pretraining and fine-tuning share: one process or a `torchrun` DDP job.

    engine = Engine(config, "pretrain", resume="auto")  # process group, threads, seed, resume state
    loader, sampler = epoch_loader(dataset, batch, config.run.seed, engine.env.rank, engine.env.world)
    model = build(...).to(engine.env.device)
    result = engine.fit(model, adamw(..., engine.lr, ...), loader, sampler, loss_of_batch, listed=len(dataset))

A task supplies what differs: the model and its optimizer, the data, the loss of a batch
(`loss_of_batch(model, batch) -> (loss, {part: value})`, its forward pass inside
`engine.autocast()`), and optionally a validation hook. The engine does the rest:

- Steps. One optimizer step is `optim.accum_steps` micro-batches (DDP synchronizes the
  gradients of the last one only); the lr is `optim.base_lr * global batch / 256`, warmed up
  over `optim.warmup_epochs` then cosine-decayed to `optim.min_lr`. An epoch is the sampler's
  batches // accum_steps steps; the run stops after `optim.epochs` epochs or `run.max_steps`.
  `optim.epochs` 0 trains nothing and saves the initialized model: a from-scratch reference.
- Precision. `run.amp` autocasts the forward pass: bf16 on CUDA (off on CPU); with
  `run.amp_dtype: float16` in fp16 on any device, the loss scaled by a GradScaler.
- A NaN or infinite loss stops the run (`TrainingDiverged`), the last good checkpoint kept.
- Logging (rank 0). OUT/config.yaml; OUT/metrics.jsonl: every `run.log_every` steps and at the
  last, the loss and its parts (means over the step's micro-batches and the processes), lr,
  clips/s, the mean seconds per step spent waiting for data and in all ("data_wait_s",
  "step_s"), and with MGM masks the samples per guidance source ("mask_sources"); at an
  epoch's end when the counts changed and at the last step, the videos read and skipped
  ("videos", `tally.VideoTally.to_dict()`); each validation's record. With `run.log_samples`,
  every process writes the videos of each of its batches (`SampleLog`). A progress bar shows
  loss, lr, clips/s, ETA and the data-wait share.
- Checkpoints. Rank 0 writes OUT/checkpoint.pt every `run.checkpoint_every` steps, at every
  epoch's end and at the last step, atomically (temp file, then rename); the checkpoint it
  replaces is kept as OUT/checkpoint.prev.pt. A checkpoint holds "model", "optimizer",
  "scheduler", "scaler", "rng" (each process's Python, NumPy and torch generator states),
  "step", "epoch" (float), "config", "videos" (the tally's state), "val" (the last validation)
  and the task's own entries.

Resume. `resume="auto"` continues from OUT/checkpoint.pt when there is one (else the run
starts afresh); a path continues from that file. When the file cannot be read (truncated,
corrupt) and the previous checkpoint lies beside it, the run continues from that one, with a
one-line warning. A resumed run continues as if it had not stopped: the model, optimizer, lr
schedule and loss scaler states; the step, hence the epoch, whose sampler skips the batches
already trained on; every process's random generators as they were after that step (a fresh
run seeds them from `run.seed` and the rank; making a data loader and validating leave them
alone, so a run draws the same wherever it was resumed); the video tallies and the last validation.
metrics.jsonl and the sample logs drop the lines written after that step. On CPU the losses
of an interrupted and resumed run equal those of an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from motionmae.common.tally import VideoTally
from motionmae.config import save_config
from motionmae.errors import MotionMAEError
from motionmae.models import checkpoints
from motionmae.models.checkpoints import CheckpointError
from motionmae.train.distributed import Distributed, mean_over_ranks, setup_distributed
from motionmae.train.optim import apply_gradients, cosine_schedule

logger = logging.getLogger(__name__)

RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "step")


class TrainingDiverged(MotionMAEError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    checkpoint: Path  # the final checkpoint (written by rank 0)
    model: nn.Module  # this process's trained model
    steps: int
    videos: VideoTally  # the training list's videos read and skipped over the run
    val: dict | None = None  # the last validation record (tasks with a validation hook)


class Engine:
    """Set up a run (process group, threads, seed, the state to resume from); `fit` trains."""

    def __init__(self, config, name: str, resume: str | None = None):
        self.config, self.name = config, name  # config: a pretraining or fine-tuning config (run, optim)
        self.env = setup_distributed(config.run.device)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        torch.manual_seed(config.run.seed)  # the model's initialization
        self.out = Path(config.run.out)
        self.checkpoint = self.out / "checkpoint.pt"
        o = config.optim
        self.lr = o.base_lr * o.batch_size * o.accum_steps * self.env.world / 256
        self.amp = amp_dtype(config.run, self.env.device)
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=self.amp == torch.float16)
        self.resume_from, self.state, self.replace_latest = self._read_resume_state(resume)

    def autocast(self):
        """The forward pass's autocast context (a no-op when `run.amp` is off for this device)."""
        return autocast(self.env.device, self.amp)

    def _read_resume_state(self, resume: str | None) -> tuple[Path | None, dict | None, bool]:
        """(the checkpoint to resume from, its contents; None, None for a fresh start; whether it is the
        previous one because the latest is unreadable: the next save then replaces the latest)."""
        if resume is None:
            return None, None, False
        path = self.checkpoint if resume == "auto" else Path(resume)
        previous = previous_path(path)
        if resume == "auto" and not path.exists() and not previous.exists():
            return None, None, False
        try:
            return path, checkpoints.load_training_state(path, RESUME_KEYS), False
        except CheckpointError as err:
            if not previous.exists():
                raise
            if self.env.main:
                logger.warning("%s; resuming from the previous checkpoint, %s", err, previous)
            return previous, checkpoints.load_training_state(previous, RESUME_KEYS), True

    def fit(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader,
        sampler,
        loss_of_batch: Callable[[nn.Module, dict], tuple[torch.Tensor, dict]],
        *,
        listed: int,
        left_out: Sequence[dict] = (),
        extras: dict | None = None,
        validate: Callable[[int], dict] | None = None,
        eval_every: int = 0,
        mask_sources=None,
        progress: bool = True,
    ) -> TrainResult:
        """Train `model` (on `env.device`) until the last step; see the module docstring.

        `loader, sampler`: `shards.epoch_loader`'s; `listed`, `left_out`: the training list's length
        and the videos the data set left out before training; `extras`: more checkpoint entries;
        `validate(step)`: a validation record ({"val_...": ...}), run every `eval_every` epochs (0: never)
        and at the last step; `mask_sources`: a `pretrain.MaskSources` for MGM masks.
        """
        config, env, o, run = self.config, self.env, self.config.optim, self.config.run
        steps_per_epoch = max(1, len(sampler) // o.accum_steps)
        total_steps = o.epochs * steps_per_epoch
        last_step = min(total_steps, run.max_steps or total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, cosine_schedule(o.warmup_epochs * steps_per_epoch, total_steps, o.min_lr / self.lr)
        )

        step, val, state = 0, None, self.state
        if state is None:
            seed_generators(run.seed, env.rank)
        else:
            checkpoints.load_state_dict_strict(model, state["model"], str(self.resume_from))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:  # empty when saved without loss scaling
                self.scaler.load_state_dict(state["scaler"])
            checkpoints.set_rng_state(state["rng"][env.rank] if env.rank < len(state["rng"]) else state["rng"][0])
            step, val = state["step"], state.get("val")
        ddp: Any = DistributedDataParallel(model) if env.world > 1 else model  # or either of them compiled
        if run.compile:
            ddp = torch.compile(ddp)  # the same parameters; `model` is still what is saved
        videos = RunVideos(listed, env, state, left_out)

        def save():
            read = videos.gathered()
            rng = [None] * env.world
            if env.world > 1:
                dist.all_gather_object(rng, checkpoints.rng_state())
            else:
                rng = [checkpoints.rng_state()]
            if env.main:
                checkpoints.atomic_save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": self.scaler.state_dict(),
                        "rng": rng,
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "config": config.to_dict(),
                        "videos": read.state(),
                        "val": val,
                        **(extras or {}),
                    },
                    self.checkpoint,
                    previous=None if self.replace_latest else previous_path(self.checkpoint),
                )
            self.replace_latest = False
            if env.world > 1:
                dist.barrier()

        log = open_run_folder(self.out, config, step, env)
        samples = SampleLog(self.out, env.rank, step) if run.log_samples else None
        bar = tqdm(
            total=last_step,
            initial=step,
            desc=self.name,
            unit="step",
            disable=not (progress and env.main),
            dynamic_ncols=True,
        )
        wait = DataWait(step)
        if last_step == 0 and state is None:  # optim.epochs 0: the initialized model
            save()
        model.train()
        while step < last_step:
            epoch = step // steps_per_epoch
            sampler.set_epoch(epoch, skip_batches=(step % steps_per_epoch) * o.accum_steps)
            with generators_kept():  # the loader draws its seeds apart from the training's generators
                batches = iter(loader)
            started, clips, micro = time.perf_counter(), 0, 0
            summed = None  # the loss and its parts, summed over this step's micro-batches
            for batch in wait.timed(batches):
                micro += 1
                sync = micro % o.accum_steps == 0
                videos.update(batch)
                if samples is not None:
                    samples.write(step + 1, epoch, batch)
                if mask_sources is not None:
                    mask_sources.add(batch)
                with ddp.no_sync() if env.world > 1 and not sync else contextlib.nullcontext():
                    loss, parts = loss_of_batch(ddp, batch)
                    check_finite(loss, step, epoch, self.checkpoint)
                    self.scaler.scale(loss / o.accum_steps).backward()
                values = torch.stack([loss, *parts.values()]).detach()
                summed = values if summed is None else summed + values
                clips += batch["frames"].shape[0] * env.world
                if not sync:
                    continue
                apply_gradients(model, optimizer, scheduler, o.clip_grad, self.scaler)
                step_values, summed = summed / o.accum_steps, None
                step += 1
                bar.update(1)
                epoch_end = step % steps_per_epoch == 0
                if step % run.log_every == 0 or step == last_step:
                    values = mean_over_ranks(step_values, env)
                    rate = clips / (time.perf_counter() - started)
                    record = {
                        "step": step,
                        "epoch": epoch,
                        "loss": values[0].item(),
                        **{k: v.item() for k, v in zip(parts, values[1:])},
                        "lr": max(g["lr"] for g in optimizer.param_groups),
                        "clips_per_s": rate,
                        **wait.flush(step),
                    }
                    if mask_sources is not None:
                        record["mask_sources"] = mask_sources.flush()
                    if log is not None:
                        log.write(record)
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}",
                        lr=f"{record['lr']:.2e}",
                        clips_s=f"{rate:.1f}",
                        wait=f"{record['data_wait_s'] / max(record['step_s'], 1e-9):.0%}",
                    )
                if epoch_end or step == last_step:
                    videos.log(log, step, epoch, last=step == last_step)
                due = eval_every and epoch_end and (step // steps_per_epoch) % eval_every == 0
                if validate is not None and (due or step == last_step):
                    with generators_kept():
                        val = {"step": step, "epoch": step / steps_per_epoch, **validate(step)}
                    model.train()
                    if log is not None:
                        log.write(val)
                if step % run.checkpoint_every == 0 or epoch_end or step == last_step:
                    save()
                if step >= last_step or epoch_end:
                    break
        bar.close()
        read = videos.gathered()
        if env.world > 1:
            dist.destroy_process_group()
        return TrainResult(self.checkpoint, model, step, read, val)


def amp_dtype(run, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward pass per `run.amp` and `run.amp_dtype`, or None (no autocast)."""
    if not run.amp or (run.amp_dtype == "bfloat16" and device.type != "cuda"):
        return None
    return getattr(torch, run.amp_dtype)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast in `dtype` on `device`, or nothing when `dtype` is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def seed_generators(seed: int, rank: int) -> None:
    """Seed Python's, NumPy's and torch's generators from (seed, rank): each process draws its own."""
    value = int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


@contextlib.contextmanager
def generators_kept():
    """Run a block that may draw random numbers (making a data loader, validating) and put Python's,
    NumPy's and torch's generators back as they were: training draws the same with or without it."""
    state = checkpoints.rng_state()
    yield
    checkpoints.set_rng_state(state)


def previous_path(path: Path) -> Path:
    """Where a checkpoint's predecessor is kept: checkpoint.pt -> checkpoint.prev.pt."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def check_finite(loss: torch.Tensor, step: int, epoch: int, checkpoint: Path) -> None:
    """Stop a run whose loss is NaN or infinite, pointing at the last good checkpoint."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"loss is {loss.item()} at step {step} (epoch {epoch}); stopped, last good checkpoint kept at {checkpoint}"
        )


class MetricsLog:
    """metrics.jsonl (one JSON object per logged step) and TensorBoard when it is installed."""

    def __init__(self, out: Path, resume_step: int):
        self.path = out / "metrics.jsonl"
        if self.path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
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


def open_run_folder(out: Path, config, step: int, env: Distributed) -> MetricsLog | None:
    """On rank 0: create the run folder, write the resolved config.yaml, open the metrics log."""
    if not env.main:
        return None
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    return MetricsLog(out, step)


class SampleLog:
    """OUT/samples-rank<r>.jsonl (`run.log_samples`): per batch of this process, the step it counts towards,
    the epoch, the positions of the videos read ("videos") and their keys when the batch has them."""

    def __init__(self, out: Path, rank: int, resume_step: int):
        self.path = out / f"samples-rank{rank}.jsonl"
        out.mkdir(parents=True, exist_ok=True)
        kept = (
            [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            if self.path.exists()
            else []
        )
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, epoch: int, batch: dict) -> None:
        record = {"step": step, "epoch": epoch, "videos": batch["video"].tolist()}
        if "key" in batch:
            record["keys"] = list(batch["key"])
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class RunVideos:
    """The training list's videos read and skipped over a run (`tally.VideoTally`), resumed from the
    checkpoint's "videos" when it has them; written to metrics.jsonl as a "videos" record at an
    epoch's end when the counts changed, and at the last step."""

    def __init__(self, listed: int, env: Distributed, state: dict | None = None, left_out: Sequence[dict] = ()):
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


class DataWait:
    """Time the loop waits for the data loader against the time of a whole step: `flush` gives the
    means per optimizer step since the previous flush, seconds, {"data_wait_s", "step_s"}."""

    def __init__(self, step: int):
        self.waited, self.since, self.step = 0.0, time.perf_counter(), step

    def timed(self, batches):
        """The iterator's batches, the time spent fetching each counted."""
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
