"""Pretraining: a masked video autoencoder's loss on raw spans, trained by the shared `engine`.

    run = pretrain(load_config("demo"))

Per step: a batch of raw spans (frames + flow + masks, made in data-loader
workers) goes to the device; the target builder turns it into per-token targets
there; the model sees the input frames and predicts the targets of masked tokens;
the loss is the builder's masked MSE. Checkpoints (`engine`) also hold the target
("target": name and dim). With MGM masks, metrics.jsonl counts the samples whose
mask followed each guidance source ("mask_sources", e.g. {"mv": 6, "diff": 2}), and
when MGM cannot use the configured guidance for some clip (a codec without motion
vectors, say), a warning says so once per run.

`data.train` is a list, a folder or a shard pattern (`motionmae pack`, `motionmae.data.shards`).
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
import torch.distributed as dist

from motionmae.config import Config, ConfigError
from motionmae.data.datasets import PretrainDataset
from motionmae.data.shards import ShardStream, epoch_loader, pretrain_dataset, read_items
from motionmae.models.vit import PretrainModel, normalize_video, token_grid
from motionmae.motion.masking import SOURCES, MaskGenerator
from motionmae.motion.targets import build_target, input_frames
from motionmae.train.distributed import Distributed
from motionmae.train.engine import Engine, TrainResult, autocast
from motionmae.train.optim import adamw, param_groups

logger = logging.getLogger(__name__)


FALLBACK_CAUSES = {  # why a configured MGM guidance source can be missing (diff never is)
    "mv": "the codec has no motion vectors (HEVC, VP9, AV1, MJPEG, ...), the clip's frames carry none, "
    "or data.shuffle_frames is on",
    "flow": "no flow is loaded for the clip (the target needs none)",
}


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
            logger.warning(
                "MGM masks fall back from %s to %s guidance for some clips: %s; metrics.jsonl counts "
                "the sources per record (mask_sources)",
                self.prefer,
                " / ".join(others),
                FALLBACK_CAUSES[self.prefer],
            )


def build_model(config: Config, target_dim: int, parts: dict | None = None) -> PretrainModel:
    """The config's model for a target of `target_dim` outputs; `model.head: mlp` needs the target's
    `parts` (name -> slice) for its per-part heads (a single part "all" when not given)."""
    m, d = config.model, config.data
    if m.head not in ("linear", "mlp"):
        raise ValueError(f"model.head must be 'linear' or 'mlp', got {m.head!r}")
    head_parts = None
    if m.head == "mlp":
        head_parts = {name: s.stop - s.start for name, s in (parts or {"all": slice(0, target_dim)}).items()}
    return PretrainModel(
        target_dim,
        m.size,
        d.frames,
        d.size,
        m.tubelet,
        m.patch,
        m.decoder_depth,
        m.decoder_dim,
        m.decoder_heads,
        m.drop_path,
        head_parts,
        m.head_hidden,
        dict(m.head_activations),
    )


def build_dataset(config: Config, target) -> PretrainDataset | ShardStream:
    """The training data of `data.train`: a list's videos, or a shard set's samples (`motionmae.data.shards`)."""
    d, m = config.data, config.model
    grid = token_grid(d.frames, d.size, m.tubelet, m.patch)
    masks = MaskGenerator(
        config.mask.kind, config.mask.ratio, grid, prefer=config.mask.guidance, options=dict(config.mask.options)
    )
    return pretrain_dataset(
        read_items(d.train),
        d,
        target.raw_span(d.frames, d.stride),
        masks,
        seed=config.run.seed,
        needs_flow=target.needs_flow or masks.needs_flow,
        reads=target.span_reads(d.frames, d.stride),
    )


def batch_loss(
    model, target, batch: dict, data, device: torch.device, amp: torch.dtype | None = None
) -> tuple[torch.Tensor, dict]:
    """Loss and its parts for one `PretrainDataset` batch: targets built on `device`, then forward.

    batch: "frames" uint8 (B, span, H, W, 3), "flow" (B, span-1, H, W, 2), "mask" bool (B, N),
    optional "cuts" bool (B, span-1);
    `data`: the config's data section (frames, stride); `amp`: the forward pass's autocast dtype.
    """
    frames = batch["frames"].to(device, non_blocking=True)
    flow = batch["flow"].to(device, non_blocking=True) if target.needs_flow else None
    mask = batch["mask"].to(device, non_blocking=True)
    cuts = batch["cuts"].to(device, non_blocking=True) if "cuts" in batch else None
    with torch.no_grad():
        y, valid = target(frames, flow, data.frames, data.stride, cuts)
    video = normalize_video(input_frames(frames, data.frames, data.stride))
    with autocast(device, amp):
        pred = model(video, mask)
    return target.loss(pred.float(), y, valid, mask)


def pretrain(config: Config, resume: str | None = None, progress: bool = True) -> TrainResult:
    """Train per `config`. `resume`: None, "auto" (the run folder's checkpoint, if any) or a checkpoint
    path; see `engine` for what resuming restores. `progress`: show a progress bar."""
    engine = Engine(config, "pretrain", resume)
    env = engine.env
    target = build_target(
        config.target.name, tubelet=config.model.tubelet, patch=config.model.patch, **config.target.options
    )
    dataset = build_dataset(config, target)
    repeats = config.data.repeats
    if config.optim.batch_size % repeats:
        raise ConfigError(f"optim.batch_size {config.optim.batch_size} is not a multiple of data.repeats {repeats}")
    if repeats > 1 and isinstance(dataset, ShardStream):
        raise ConfigError("data.repeats > 1 is not supported with shards yet; use a list, or data.repeats=1")
    loader, sampler = epoch_loader(
        dataset,
        config.optim.batch_size // repeats,
        config.run.seed,
        env.rank,
        env.world,
        config.data.workers,
        env.device.type == "cuda",
    )
    model = build_model(config, target.dim, target.parts).to(env.device)
    o = config.optim
    optimizer = adamw(param_groups(model, o.weight_decay), engine.lr, o.betas)
    needs_motion = dataset.masks is not None and dataset.masks.needs_motion
    sources = MaskSources(config.mask.guidance, env) if needs_motion else None
    return engine.fit(
        model,
        optimizer,
        loader,
        sampler,
        lambda model, batch: batch_loss(model, target, batch, config.data, env.device, engine.amp),
        listed=dataset.listed,
        left_out=dataset.left_out,
        mask_sources=sources,
        extras={"target": {"name": config.target.name, "dim": target.dim}},
        progress=progress,
    )
