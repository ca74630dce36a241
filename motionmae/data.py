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

With `data.shuffle_frames` (the temporal-shuffle ablation of MME's Fig. 3) the
span's frames come in a random order, and everything is made from the shuffled
span as if it were the video: the flow between consecutive shuffled frames is
computed on the fly (the cached flow belongs to the true order), and no codec
vectors are read (MGM falls back to that flow). Only pretraining samples are
shuffled; probe and fine-tuning clips (`ClipDataset`) never are.

With `data.in_memory` every video is decoded once (and its cached flow read once)
on first use and kept in RAM, so later samples cost array slicing instead of a
decode: for small data sets such as the demo's, with `data.workers: 0` (each
worker process would keep a copy of its own).
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
from motionmae.video import VIDEO_SUFFIXES, Clip, VideoError, VideoReader



class ListError(ValueError):
    """A list file or folder that cannot be read; names the file and line."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: int  # -1: unlabelled
    key: str  # the video's name in the motion cache: its path relative to the list's folder


def read_list(source) -> list[Item]:
    """Videos of a list file (`path label` lines), of a folder (recursive, unlabelled), or one video file."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        return [Item(source, -1, source.name)]
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


def _init_worker(_):
    """Data-loader workers decode and augment single-threaded: the cores go to the workers."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def make_loader(dataset, workers: int, pin_memory: bool = False, **batching) -> torch.utils.data.DataLoader:
    """A DataLoader whose worker processes are spawned once and kept across epochs.

    Spawned rather than forked: a fork after OpenCV or FFmpeg threads ran in
    the parent can deadlock. Persistent, so the start-up cost is paid once;
    samplers run in the main process, so `set_epoch` still reaches them.
    `batching`: `batch_sampler=...` or `batch_size=...`.
    """
    extra = {"multiprocessing_context": "spawn", "persistent_workers": True, "worker_init_fn": _init_worker}
    return torch.utils.data.DataLoader(dataset, num_workers=workers, pin_memory=pin_memory,
                                       **(extra if workers > 0 else {}), **batching)


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
    if w == h == out:  # nothing to resize (e.g. a full-frame crop at the decoded size)
        return crops[:, :, ::-1] if box.flip else crops
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
    """Flow of frames `start..stop` of a video under a crop box: float32 `(stop - start, S, S, 2)`, output px.

    Read from the motion cache straight into the box (one resampling of the
    stored field); when the video has no entry, computed from the decoded
    frames if `data.flow_on_the_fly`, else `FlowUnavailable` names it. With
    `data.in_memory` a video's whole flow is read once at frame resolution
    (float16) and kept; spans are then cut from it and resampled into the box.
    """

    def __init__(self, data):
        self.cache = open_cache(data)
        self.on_the_fly = data.flow_on_the_fly
        self.kept: dict[str, np.ndarray] | None = {} if data.in_memory else None

    def __call__(self, item: Item, frames: np.ndarray, start: int, stop: int, box: CropBox) -> np.ndarray:
        try:
            info = self.cache.info(item.key)
        except CacheError as err:
            if not self.on_the_fly:
                raise FlowUnavailable(f"{err}; run `motionmae prepare` on its list first, "
                                      f"or set data.flow_on_the_fly=true") from None
            return self.compute(frames, box)[: stop - start]
        stop_in = min(stop, info.num_flows)
        flow = np.zeros((stop - start, box.size, box.size, 2), np.float32)  # past the end: no motion
        if start < stop_in and self.kept is not None:
            if item.key not in self.kept:
                self.kept[item.key] = self.cache.read(item.key, 0, info.num_flows).astype(np.float16)
            flow[: stop_in - start] = augment_flow(self.kept[item.key][start:stop_in].astype(np.float32), box)
            return flow
        if start < stop_in:
            flow[: stop_in - start] = self.cache.read(item.key, start, stop_in, size=(box.size, box.size),
                                                      crop=(box.x, box.y, box.w, box.h))
        if box.flip:
            flow = flow[:, :, ::-1] * np.array([-1.0, 1.0], np.float32)
        return np.ascontiguousarray(flow)

    def compute(self, frames: np.ndarray, box: CropBox) -> np.ndarray:
        """Flow between consecutive decoded frames uint8 `(T, H, W, 3)` with the cache's flow
        parameters, under the box: `(T - 1, S, S, 2)` output px."""
        return augment_flow(video_flow(frames, self.cache.params.flow), box)


# ---------------------------------------------------------------- pretraining dataset


class MemoryVideo:
    """A whole video decoded once and kept, read like a `VideoReader`: `len()`, `read(indices, motion)`."""

    def __init__(self, path, short_side: int | None, motion: bool):
        with VideoReader(path, short_side) as reader:
            self.clip = reader.read(np.arange(len(reader)), motion=motion)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __len__(self) -> int:
        return len(self.clip.frames)

    def read(self, indices, motion: bool = False) -> Clip:
        """Frames (and vectors, when decoded with them) at any list of indices, in the order asked."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        c = self.clip
        if not motion or c.motion is None:
            return Clip(c.frames[indices], None, None, indices)
        return Clip(c.frames[indices], c.motion[indices], c.has_motion[indices], indices)


class PretrainDataset(torch.utils.data.Dataset):
    """Raw spans of `raw_span` frames with flow, codec vectors and a mask; see the module docstring.

    Indexed by `(epoch, index)` (from `EpochSampler`): every random choice
    (start, crop, flip, mask) comes from `sample_rng(seed, index, epoch)`, so a
    sample does not depend on the worker that draws it. Videos without a
    motion-cache entry are left out with one warning naming them (an error when
    none has one), unless flow is computed on the fly. A video that fails to
    read is reported on stderr and replaced by the next one in the list.
    """

    def __init__(self, items: list[Item], data, raw_span: int, masks: MaskGenerator, seed: int = 0,
                 needs_flow: bool = True, train: bool = True):
        self.data, self.raw_span, self.masks = data, raw_span, masks
        self.seed, self.needs_flow, self.train = seed, needs_flow, train
        self.span_flow = SpanFlow(data) if needs_flow else None
        self.videos: dict[str, MemoryVideo] | None = {} if data.in_memory else None
        if needs_flow and not (data.flow_on_the_fly or data.shuffle_frames):
            items = self._cached(items)
        self.items = items

    def _cached(self, items: list[Item]) -> list[Item]:
        cache = self.span_flow.cache
        missing = [item for item in items if not cache.entry_path(item.key).is_file()]
        if not missing:
            return items
        hint = f"run `motionmae prepare LIST --cache {cache.root}` first, or set data.flow_on_the_fly=true"
        if len(missing) == len(items):
            raise FlowUnavailable(f"none of the {len(items)} videos is in the motion cache {cache.dir} "
                                  f"(first: {missing[0].path}); {hint}")
        names = ", ".join(str(item.path) for item in missing[:3]) + (" ..." if len(missing) > 3 else "")
        print(f"warning: {len(missing)} of {len(items)} videos are not in the motion cache {cache.dir} "
              f"and are left out: {names}", file=sys.stderr)
        return [item for item in items if item not in missing]

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
        return self.sample(item, rng)[0]

    def open(self, item: Item):
        """A reader of the item's video; with `data.in_memory`, the video decoded once and kept."""
        if self.videos is None:
            return VideoReader(item.path, self.data.short_side)
        if item.key not in self.videos:
            motion = self.masks.needs_motion and not self.data.shuffle_frames
            self.videos[item.key] = MemoryVideo(item.path, self.data.short_side, motion)
        return self.videos[item.key]

    def sample(self, item: Item, rng: np.random.Generator, start: int | None = None) -> tuple[dict, CropBox]:
        """One sample (the dict of the module docstring) and its crop box in decoded pixels.

        `start`: the span's first raw frame; by default random in training, the middle otherwise.
        """
        d = self.data
        with self.open(item) as reader:
            count = len(reader)
            last_start = max(0, count - self.raw_span)
            if start is None:
                start = int(rng.integers(last_start + 1)) if self.train else last_start // 2
            span = np.minimum(start + np.arange(self.raw_span), count - 1)  # short videos repeat their last frame
            clip = reader.read(span, motion=self.masks.needs_motion and not d.shuffle_frames)
        box = multiscale_crop(clip.frames.shape[1], clip.frames.shape[2], d.size, d.scales, d.flip, rng, self.train)
        decoded = clip.frames
        if d.shuffle_frames:
            order = rng.permutation(len(span))
            span, decoded = span[order], decoded[order]
        frames = augment_frames(decoded, box)
        flow = None
        if self.needs_flow and d.shuffle_frames:
            flow = self.span_flow.compute(decoded, box)
        elif self.needs_flow:
            flow = self.span_flow(item, decoded, start, start + self.raw_span - 1, box)
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
        }, box


# ---------------------------------------------------------------- classification clips


@dataclass(frozen=True)
class ClipSpec:
    """How a classification clip is cut from a video."""

    frames: int = 16
    sampling: str = "dense"  # dense: `frames` frames `stride` apart | segment: one frame of each of `frames` segments
    stride: int = 4
    size: int = 224  # crop side fed to the model (pixels)
    short_side: int | None = 256  # decode size (pixels)


def clip_indices(count: int, spec: ClipSpec, rng: np.random.Generator | None = None,
                 clip: int = 0, clips: int = 1) -> np.ndarray:
    """Frame indices (T,) of one clip of a `count`-frame video; short videos repeat their last frame.

    Dense: T frames `stride` apart from a random start (`rng`), or from the
    `clip`-th of `clips` starts spread evenly over the video (the middle one
    when `clips` is 1). Segment (TSN): the video cut into T equal segments and
    one frame taken from each, at a random place (`rng`) or at the fraction
    `(clip + 0.5) / clips` of every segment.
    """
    if spec.sampling == "dense":
        room = max(0, count - (spec.frames - 1) * spec.stride - 1)
        if rng is not None:
            start = int(rng.integers(room + 1))
        else:
            start = room // 2 if clips == 1 else round(clip * room / (clips - 1))
        return np.minimum(start + spec.stride * np.arange(spec.frames), count - 1)
    if spec.sampling == "segment":
        offsets = rng.random(spec.frames) if rng is not None else np.full(spec.frames, (clip + 0.5) / clips)
        return np.minimum((count / spec.frames * (np.arange(spec.frames) + offsets)).astype(np.int64), count - 1)
    raise ValueError(f"unknown sampling '{spec.sampling}' (dense | segment)")


def random_resized_crop(height: int, width: int, size: int, area, aspect, flip: bool,
                        rng: np.random.Generator) -> CropBox:
    """Inception-style crop: area fraction uniform in `area`, width/height log-uniform in `aspect`
    (10 tries, then the centre square), resized to `size`, mirrored with probability 1/2 if `flip`."""
    mirror = bool(flip and rng.integers(2))
    for _ in range(10):
        target = height * width * rng.uniform(*area)
        ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return CropBox(int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1)), w, h, size, mirror)
    side = min(height, width)
    return CropBox((width - side) // 2, (height - side) // 2, side, side, size, mirror)


def view_crops(height: int, width: int, size: int, crops: int) -> list[CropBox]:
    """Test crops: `crops` squares of the short side spread along the long side (1: centre; 3: start,
    centre, end), each resized to `size` (= resizing the short side to `size`, then cropping)."""
    side = min(height, width)
    room = max(height, width) - side
    offsets = [room // 2] if crops == 1 else [round(i * room / (crops - 1)) for i in range(crops)]
    if width >= height:
        return [CropBox(o, 0, side, side, size, False) for o in offsets]
    return [CropBox(0, o, side, side, size, False) for o in offsets]


# ---------------------------------------------------------------- RandAugment on a clip

FILL = (124, 116, 104)  # ImageNet mean pixel: what rotations, shears and shifts move in


def _signed(level: float, scale: float, rng: np.random.Generator) -> float:
    return level * scale * (1 if rng.random() < 0.5 else -1)


def _per_channel(frames: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Apply one 256-entry lookup table per channel: tables (3, 256) uint8."""
    return np.stack([tables[c][frames[..., c]] for c in range(3)], axis=-1)


def _blend(frames: np.ndarray, other, factor: float) -> np.ndarray:
    """PIL ImageEnhance: other + factor * (frames - other), clipped to uint8."""
    return np.clip(other + factor * (frames.astype(np.float32) - other), 0, 255).astype(np.uint8)


def _gray(frames: np.ndarray) -> np.ndarray:
    return (frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


def _warp(frames: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Each frame through the same 2x3 affine map from output to input pixels."""
    h, w = frames.shape[1:3]
    return np.stack([cv2.warpAffine(f, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=FILL) for f in frames])


def _auto_contrast(frames, level, rng):
    lo, hi = frames.reshape(-1, 3).min(0).astype(np.float32), frames.reshape(-1, 3).max(0).astype(np.float32)
    values = np.arange(256, dtype=np.float32)
    tables = [np.clip((values - l) * 255 / (h - l), 0, 255) if h > l else values for l, h in zip(lo, hi)]
    return _per_channel(frames, np.stack(tables).astype(np.uint8))


def _equalize(frames, level, rng):
    tables = []
    for c in range(3):
        cdf = np.bincount(frames[..., c].ravel(), minlength=256).cumsum()
        first = cdf[cdf > 0][0]
        span = cdf[-1] - first
        tables.append(np.clip((cdf - first) * 255 / span, 0, 255) if span else np.arange(256))
    return _per_channel(frames, np.stack(tables).astype(np.uint8))


def _rotate(frames, level, rng):
    h, w = frames.shape[1:3]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), _signed(level, 30.0, rng), 1.0)
    return _warp(frames, cv2.invertAffineTransform(matrix))


def _shear(axis):
    def op(frames, level, rng):
        s = _signed(level, 0.3, rng)
        return _warp(frames, np.array([[1, s, 0], [0, 1, 0]] if axis == 0 else [[1, 0, 0], [s, 1, 0]], np.float32))
    return op


def _translate(axis):
    def op(frames, level, rng):
        shift = _signed(level, 0.45, rng) * frames.shape[2 - axis]
        return _warp(frames, np.array([[1, 0, shift], [0, 1, 0]] if axis == 0 else [[1, 0, 0], [0, 1, shift]],
                                      np.float32))
    return op


def _sharpness(frames, level, rng):
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
    smooth = np.stack([cv2.filter2D(f, -1, kernel) for f in frames]).astype(np.float32)
    smooth[:, [0, -1]], smooth[:, :, [0, -1]] = frames[:, [0, -1]], frames[:, :, [0, -1]]  # PIL keeps the border
    return _blend(frames, smooth, 1 + _signed(level, 0.9, rng))


RANDAUG_OPS = {  # timm's "increasing" set: a larger level is always a stronger change; level in [0, 1]
    "auto_contrast": _auto_contrast,
    "equalize": _equalize,
    "invert": lambda f, level, rng: 255 - f,
    "rotate": _rotate,
    "posterize": lambda f, level, rng: f & np.uint8((0xFF << (8 - (4 - int(level * 4)))) & 0xFF),
    "solarize": lambda f, level, rng: np.where(f >= 256 - int(level * 256), 255 - f, f),
    "solarize_add": lambda f, level, rng: np.where(f < 128, np.minimum(f.astype(np.int16) + int(level * 110), 255),
                                                   f).astype(np.uint8),
    "color": lambda f, level, rng: _blend(f, _gray(f), 1 + _signed(level, 0.9, rng)),
    "contrast": lambda f, level, rng: _blend(f, _gray(f).mean(), 1 + _signed(level, 0.9, rng)),
    "brightness": lambda f, level, rng: _blend(f, 0.0, 1 + _signed(level, 0.9, rng)),
    "sharpness": _sharpness,
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
}


@dataclass(frozen=True)
class RandAugment:
    """RandAugment (Cubuk et al.) for a clip: `ops` operations drawn with replacement, each applied with
    probability `prob` at magnitude ~ N(magnitude, std) clipped to [0, 10]; the same operation with
    the same parameters on every frame, and image statistics (auto-contrast, equalize, contrast)
    taken over the whole clip, so frames stay consistent with each other. uint8 (T, H, W, 3) in and out."""

    ops: int = 2
    magnitude: float = 9.0
    std: float = 0.5
    prob: float = 0.5

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        names = list(RANDAUG_OPS)
        for name in (names[i] for i in rng.integers(len(names), size=self.ops)):
            if rng.random() >= self.prob:
                continue
            magnitude = rng.normal(self.magnitude, self.std) if self.std > 0 else self.magnitude
            frames = RANDAUG_OPS[name](frames, float(np.clip(magnitude, 0, 10)) / 10, rng)
        return np.ascontiguousarray(frames)


# ---------------------------------------------------------------- classification dataset


@dataclass(frozen=True)
class TrainAugment:
    """Training-time clip augmentation (fine-tuning)."""

    area: tuple = (0.08, 1.0)  # random resized crop: area fraction range
    aspect: tuple = (0.75, 4 / 3)  # and width/height range
    flip: bool = True
    randaug: RandAugment | None = None


class ClipDataset(torch.utils.data.Dataset):
    """Labelled clips for fine-tuning, feature extraction and multi-view testing.

    Training (`augment` given): indexed by `(epoch, index)` from `EpochSampler`
    over `len(items) * repeats` entries (repeated augmentation: entry i is video
    i mod N, with its own random draw); one clip with random temporal position,
    random resized crop, flip and RandAugment, all from `sample_rng(seed, i,
    epoch)`. A video that fails to read is reported on stderr and replaced by
    the next one.

    Testing (`augment` None): `clips x crops` views of every video, clip-major.
    A video that fails to read gives `ok=False` and blank frames, so callers
    skip and count it.

        frames  uint8 (T, S, S, 3) in training, (V, T, S, S, 3) in testing
        label   int64 ()
        ok      bool  ()   (testing)
    """

    def __init__(self, items: list[Item], spec: ClipSpec, augment: TrainAugment | None = None,
                 seed: int = 0, repeats: int = 1, clips: int = 1, crops: int = 1):
        self.items, self.spec, self.augment = items, spec, augment
        self.seed, self.repeats, self.clips, self.crops = seed, repeats, clips, crops

    def __len__(self) -> int:
        return len(self.items) * (self.repeats if self.augment else 1)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.augment is None:
            item = self.items[index]
            try:
                frames, ok = self.views(item), True
            except VideoError as err:
                print(f"warning: skipping {item.path}: {err}", file=sys.stderr)
                s = self.spec
                frames, ok = np.zeros((self.clips * self.crops, s.frames, s.size, s.size, 3), np.uint8), False
            return {"frames": torch.from_numpy(frames), "label": torch.tensor(item.label), "ok": torch.tensor(ok)}
        for attempt in range(len(self.items)):
            item = self.items[(index + attempt) % len(self.items)]
            try:
                frames = self.train_clip(item, sample_rng(self.seed, index, epoch))
                return {"frames": torch.from_numpy(frames), "label": torch.tensor(item.label)}
            except VideoError as err:
                print(f"warning: skipping {item.path}: {err}", file=sys.stderr)
        raise ListError("no video in the list could be read")

    def train_clip(self, item: Item, rng: np.random.Generator) -> np.ndarray:
        """uint8 (T, S, S, 3)."""
        s, a = self.spec, self.augment
        with VideoReader(item.path, s.short_side) as reader:
            frames = reader.read(clip_indices(len(reader), s, rng)).frames
        box = random_resized_crop(frames.shape[1], frames.shape[2], s.size, a.area, a.aspect, a.flip, rng)
        frames = augment_frames(frames, box)
        return a.randaug(frames, rng) if a.randaug else frames

    def views(self, item: Item) -> np.ndarray:
        """uint8 (clips * crops, T, S, S, 3): every temporal clip at every spatial crop."""
        s = self.spec
        with VideoReader(item.path, s.short_side) as reader:
            indices = [clip_indices(len(reader), s, clip=c, clips=self.clips) for c in range(self.clips)]
            frames = reader.read(np.concatenate(indices)).frames
        frames = frames.reshape(self.clips, s.frames, *frames.shape[1:])
        boxes = view_crops(frames.shape[2], frames.shape[3], s.size, self.crops)
        return np.stack([augment_frames(clip, box) for clip in frames for box in boxes])
