"""Clips for training: list files, epoch sampling, joint augmentation, the pretraining dataset.

A list file has one video a line, `relative/path.mp4 label` (VideoMAE /
MMAction2 format; paths relative to the list's folder; the label is optional).
A folder stands for every video under it, unlabelled.

A pretraining sample is the clip's *raw span*: the `T_raw` consecutive frames
its targets need (the T input frames at stride s are raw frames 0, s, 2s, ...
of it), the camera-compensated flow between them from the motion cache, the
codec motion vectors of the input frames, and a mask made here, in the
data-loader worker, so it travels with the batch:

    frames  uint8   (T_raw, S, S, 3)
    flow    float32 (T_raw - 1, S, S, 2)   (empty when the target needs no flow)
    mask    bool    (N,)                    True = masked
    label   int64   ()                      -1 when unlabelled
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from motionmae.cache import CacheError, CacheParams, MotionCache, video_key
from motionmae.flow import video_flow
from motionmae.masking import MaskGenerator, sample_rng
from motionmae.video import Clip, VideoError, VideoReader

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}


class ListError(ValueError):
    """A list file or folder that cannot be read; names the file and line."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: int  # -1: unlabelled
    key: str  # the video's name in the motion cache: its path relative to the list's folder


def read_list(source) -> list[Item]:
    """Videos of a list file (`path label` lines) or of a folder (recursive, unlabelled)."""
    source = Path(source)
    if source.is_dir():
        items = [Item(p, -1, video_key(p, source)) for p in sorted(source.rglob("*"))
                 if p.suffix.lower() in VIDEO_SUFFIXES]
        if not items:
            raise ListError(f"{source}: no videos found in this folder")
        return items
    if not source.is_file():
        raise ListError(f"{source}: no such list file or folder")
    items = []
    for number, line in enumerate(source.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].lstrip("-").isdigit()):
            raise ListError(f"{source}:{number}: expected 'path [label]', got {line!r}")
        path = Path(fields[0])
        path = path if path.is_absolute() else source.parent / path
        items.append(Item(path, int(fields[1]) if len(fields) == 2 else -1, video_key(path, source.parent)))
    if not items:
        raise ListError(f"{source}: the list names no videos")
    return items


class EpochSampler(torch.utils.data.Sampler):
    """Batches of `(epoch, index)` pairs, the same on every run with the same seed.

    Each epoch is a seeded permutation cut into global batches of
    `batch_size * world` items; rank r takes every world-th item of each, so
    the union over ranks of step k's batches is the same as one process with
    the global batch. `set_epoch(e, skip_batches=k)` starts epoch e at its
    k-th batch (to resume mid-epoch). Incomplete last batches are dropped.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        if num_items < batch_size * world:
            raise ListError(f"{num_items} videos are fewer than one global batch ({batch_size} x {world})")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world, self.shuffle = rank, world, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.world)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_items)
        step = self.batch_size * self.world
        for b in range(self.skip, len(self)):
            chunk = order[b * step:(b + 1) * step][self.rank::self.world]
            yield [(self.epoch, int(i)) for i in chunk]


# ---------------------------------------------------------------- joint augmentation


@dataclass(frozen=True)
class CropBox:
    """A crop `(x, y, w, h)` in source pixels, resized to `size`, optionally mirrored."""

    x: int
    y: int
    w: int
    h: int
    size: int
    flip: bool


def multiscale_crop(height: int, width: int, size: int, scales, flip: bool, rng: np.random.Generator,
                    train: bool = True) -> CropBox:
    """VideoMAE's MultiScaleCrop: side lengths from `scales` x short side (aspect distortion <= 1 step),
    placed at one of 5 fixed positions (corners, centre); evaluation takes the full centre square."""
    base = min(height, width)
    if not train:
        return CropBox((width - base) // 2, (height - base) // 2, base, base, size, False)
    sides = [int(base * s) for s in scales]
    pairs = [(w, h) for i, w in enumerate(sides) for j, h in enumerate(sides) if abs(i - j) <= 1]
    w, h = pairs[rng.integers(len(pairs))]
    dx, dy = width - w, height - h
    x, y = [(0, 0), (dx, 0), (0, dy), (dx, dy), (dx // 2, dy // 2)][rng.integers(5)]
    return CropBox(x, y, w, h, size, bool(flip and rng.integers(2)))


def _resize_stack(stack: np.ndarray, box: CropBox, x: int, y: int, w: int, h: int, out: int,
                  interpolation: int) -> np.ndarray:
    """Crop (x, y, w, h) of each (H, W, C) array of `stack` and resize to (out, out)."""
    crops = stack[:, y:y + h, x:x + w]
    t, _, _, c = crops.shape
    # OpenCV resizes up to 512 channels at once: fold time into channels.
    folded = np.ascontiguousarray(crops.transpose(1, 2, 0, 3).reshape(h, w, t * c))
    pieces = [cv2.resize(folded[..., i:i + 512], (out, out), interpolation=interpolation)
              for i in range(0, t * c, 512)]
    resized = np.concatenate([p.reshape(out, out, -1) for p in pieces], axis=-1)
    resized = resized.reshape(out, out, t, c).transpose(2, 0, 1, 3)
    return resized[:, :, ::-1] if box.flip else resized


def augment_frames(frames: np.ndarray, box: CropBox) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, S, S, 3)."""
    return np.ascontiguousarray(_resize_stack(frames, box, box.x, box.y, box.w, box.h, box.size, cv2.INTER_LINEAR))


def augment_flow(flow: np.ndarray, box: CropBox) -> np.ndarray:
    """float32 (T, H, W, 2) px -> (T, S, S, 2): vectors scaled by the resize, dx negated on flip."""
    out = _resize_stack(flow, box, box.x, box.y, box.w, box.h, box.size, cv2.INTER_LINEAR)
    scale = np.array([box.size / box.w, box.size / box.h], np.float32)
    if box.flip:
        scale[0] = -scale[0]
    return np.ascontiguousarray(out * scale)


def augment_vectors(motion: np.ndarray, box: CropBox, cell: int = 8) -> np.ndarray:
    """Codec vectors (T, h8, w8, 2) on the 8x8 grid -> (T, S/8, S/8, 2), like `augment_flow`."""
    x0, y0 = box.x // cell, box.y // cell
    w, h = max(1, math.ceil(box.w / cell)), max(1, math.ceil(box.h / cell))
    out = _resize_stack(motion, box, x0, y0, w, h, max(1, box.size // cell), cv2.INTER_NEAREST)
    scale = np.array([box.size / box.w, box.size / box.h], np.float32)
    if box.flip:
        scale[0] = -scale[0]
    return np.ascontiguousarray(out * scale)


# ---------------------------------------------------------------- flow of a span


class FlowUnavailable(Exception):
    """A video has no motion-cache entry and on-the-fly flow is off."""


def open_cache(data) -> MotionCache:
    """The motion cache of a data config.

    `data.cache` is either one `flow-<key>` folder, or a root holding them; in
    a root, the one folder made at `data.short_side` is used (default
    parameters when there is none yet, so a missing entry is reported by name).
    """
    path = Path(data.cache)
    if (path / "params.json").is_file():
        return MotionCache.from_dir(path)
    made = [MotionCache.from_dir(p.parent) for p in sorted(path.glob("flow-*/params.json"))]
    matching = [c for c in made if c.params.short_side == data.short_side]
    if len(matching) > 1:
        raise FlowUnavailable(f"{path} holds several motion caches at short side {data.short_side} "
                              f"({', '.join(c.dir.name for c in matching)}): set data.cache to one of them")
    return matching[0] if matching else MotionCache(path, CacheParams(short_side=data.short_side))


class SpanFlow:
    """Flow of frames `start..stop` of a video: float32 `(stop - start, H, W, 2)` at decode size.

    Read from the motion cache; when the video has no entry, computed from the
    decoded frames if `data.flow_on_the_fly`, else `FlowUnavailable` names it.
    """

    def __init__(self, data):
        self.cache = open_cache(data)
        self.on_the_fly = data.flow_on_the_fly

    def __call__(self, item: Item, frames: np.ndarray, start: int, stop: int) -> np.ndarray:
        try:
            info = self.cache.info(item.key)
        except CacheError as err:
            if not self.on_the_fly:
                raise FlowUnavailable(f"{err}; run `motionmae prepare` on its list first, "
                                      f"or set data.flow_on_the_fly=true") from None
            return video_flow(frames, self.cache.params.flow)[: stop - start]
        stop_in = min(stop, info.num_flows)
        flow = np.zeros((stop - start, *frames.shape[1:3], 2), np.float32)  # past the end: no motion
        if start < stop_in:
            flow[: stop_in - start] = self.cache.read(item.key, start, stop_in, size=frames.shape[1:3])
        return flow


# ---------------------------------------------------------------- pretraining dataset


class PretrainDataset(torch.utils.data.Dataset):
    """Raw spans of `raw_span` frames with flow, codec vectors and a mask; see the module docstring.

    Indexed by `(epoch, index)` (from `EpochSampler`): every random choice
    (start, crop, flip, mask) comes from `sample_rng(seed, index, epoch)`, so a
    sample does not depend on the worker that draws it. A video that fails to
    read is reported on stderr and replaced by the next one in the list.
    """

    def __init__(self, items: list[Item], data, raw_span: int, masks: MaskGenerator, seed: int = 0,
                 needs_flow: bool = True, train: bool = True):
        self.items, self.data, self.raw_span, self.masks = items, data, raw_span, masks
        self.seed, self.needs_flow, self.train = seed, needs_flow, train
        self.span_flow = SpanFlow(data) if needs_flow else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        for attempt in range(len(self.items)):
            item = self.items[(index + attempt) % len(self.items)]
            try:
                return self.load(item, sample_rng(self.seed, index, epoch))
            except (VideoError, FlowUnavailable) as err:
                print(f"warning: skipping {item.path}: {err}", file=sys.stderr)
        raise ListError("no video in the list could be read")

    def load(self, item: Item, rng: np.random.Generator) -> dict:
        d = self.data
        with VideoReader(item.path, d.short_side) as reader:
            count = len(reader)
            last_start = max(0, count - self.raw_span)
            start = int(rng.integers(last_start + 1)) if self.train else last_start // 2
            span = np.minimum(start + np.arange(self.raw_span), count - 1)  # short videos repeat their last frame
            clip = reader.read(span, motion=self.masks.needs_motion)
        box = multiscale_crop(clip.frames.shape[1], clip.frames.shape[2], d.size, d.scales, d.flip, rng, self.train)
        frames = augment_frames(clip.frames, box)
        flow = None
        if self.needs_flow:
            raw = self.span_flow(item, clip.frames, start, start + self.raw_span - 1)
            flow = augment_flow(raw, box)
        inputs = slice(0, (d.frames - 1) * d.stride + 1, d.stride)
        motion = has_motion = None
        if clip.motion is not None:
            motion, has_motion = augment_vectors(clip.motion[inputs], box), clip.has_motion[inputs]
        input_flow = None if flow is None else flow[: (d.frames - 1) * d.stride][:: d.stride]
        mask, source = self.masks.for_clip(Clip(frames[inputs], motion, has_motion, span[inputs]), rng, input_flow)
        return {
            "frames": torch.from_numpy(frames),
            "flow": torch.from_numpy(flow) if flow is not None else torch.zeros(0),
            "mask": torch.from_numpy(mask),
            "label": torch.tensor(item.label),
            "mask_source": source,
        }
