"""Clips for training: epoch sampling, joint augmentation, the pretraining and classification datasets.

Datasets take the `Item`s of a list file or folder (`common.lists.read_list`).

A pretraining sample is the clip's *raw span*: the `T_raw` consecutive frames
its targets need (the T input frames at stride s are raw frames 0, s, 2s, ...
of it), the camera-compensated flow between them from the motion cache, the
codec motion vectors of the input frames, and a mask made here, in the
data-loader worker, so it travels with the batch:

    frames  uint8   (T_raw, S, S, 3)
    flow    float32 (T_raw - 1, S, S, 2)   (empty when neither the target nor mgm's guidance needs flow)
    mask    bool    (N,)                    True = masked
    cuts    bool    (T_raw - 1,)            True where frames t and t + 1 lie across a shot cut
    label   int64   ()                      -1 when unlabelled
    video   int64   ()                      the video's position in the list (counted by `tally.VideoTally`)
    key     str                             the video's key (`common.lists.video_key`)
    skipped list of {"position", "path", "kind", "reason"}: videos that failed before this one was read

The loader decodes, resizes and reads from the cache only what the target reads
(`Target.span_reads`, always with the T input frames): the other frames and flow
fields of the span are zeros (`data.fast_loader: false` decodes and resamples the whole
span). With `data.repeats` N, one index gives N samples of one
decoded span, each with its own crop, flip and mask (repeated sampling, as in MAE-ST and
VideoMAE v2: N x the clips per decoded frame; `optim.batch_size` counts clips).

A short video (fewer frames than the span) repeats its last frame, as
VideoMAE does; the span ends at the last frame that both the reader and the
motion cache have, so a count that differs by a frame drops nothing.

Shot cuts come from the video's motion-cache entry (`prepare` finds them; without
an entry they are unknown and read as none). Targets leave out the trajectories
that cross one, and MGM ignores the motion measured across one.

With `data.shuffle_frames` (the temporal-shuffle ablation of MME's Fig. 3) the
span's frames come in a random order, and everything is made from the shuffled
span as if it were the video: the flow between consecutive shuffled frames is
computed on the fly (the cached flow belongs to the true order), no codec
vectors are read (MGM falls back to that flow), and two consecutive shuffled
frames lie across a cut when they come from different shots. Only pretraining
samples are shuffled; probe and fine-tuning clips (`ClipDataset`) never are.

With `data.in_memory` every video is decoded once (and its cached flow read once)
on first use and kept in RAM, so later samples cost array slicing instead of a
decode: for small data sets such as the demo's, with `data.workers: 0` (each
worker process would keep a copy of its own).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from motionmae.common.lists import Item, ListError
from motionmae.common.rng import repeat_rng, sample_rng
from motionmae.common.tally import skip_kind
from motionmae.config import ConfigError
from motionmae.errors import MotionMAEError
from motionmae.io.cache import CacheError, CacheParams, MotionCache
from motionmae.io.video import Clip, VideoError, VideoReader
from motionmae.motion.cuts import shot_ids
from motionmae.motion.flow import video_flow
from motionmae.motion.masking import MaskGenerator

logger = logging.getLogger(__name__)


class EpochSampler(torch.utils.data.Sampler):
    """Batches of `(epoch, index)` pairs, the same on every run with the same seed.

    Each epoch is a seeded permutation cut into global batches of
    `batch_size * world` items; rank r takes every world-th item of each, so
    the union over ranks of step k's batches is the same as one process with
    the global batch. `set_epoch(e, skip_batches=k)` starts epoch e at its
    k-th batch (to resume mid-epoch). Incomplete last batches are dropped.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True
    ):
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
            chunk = order[b * step : (b + 1) * step][self.rank :: self.world]
            yield [(self.epoch, int(i)) for i in chunk]


def _init_worker(_):
    """Data-loader workers decode and augment single-threaded: the cores go to the workers."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def collate(samples: list) -> dict:
    """`default_collate`, except that the per-sample "skipped" lists are joined into one list and
    lists of samples (`PretrainDataset` with repeats) are taken apart into their samples."""
    samples = [s for entry in samples for s in (entry if isinstance(entry, list) else [entry])]
    skipped = [entry for sample in samples for entry in sample["skipped"]]
    batch = torch.utils.data.default_collate([{k: v for k, v in s.items() if k != "skipped"} for s in samples])
    return {**batch, "skipped": skipped}


def skip_entry(position: int, item: Item, err: Exception) -> dict:
    """Warn about a video that failed to read and describe it for the batch's "skipped" list."""
    logger.warning("skipping %s: %s", item.path, err)
    return {
        "position": position,
        "path": str(item.path),
        "kind": skip_kind(err),
        "reason": getattr(err, "problem", str(err)),
    }


def make_loader(
    dataset, workers: int, pin_memory: bool = False, persistent: bool = True, **batching
) -> torch.utils.data.DataLoader:
    """A DataLoader of our data sets' samples (batched by `collate`) whose worker processes are
    spawned once and kept across epochs.

    Spawned rather than forked: a fork after OpenCV or FFmpeg threads ran in
    the parent can deadlock. Persistent, so the start-up cost is paid once;
    samplers run in the main process, so `set_epoch` still reaches them
    (streamed data sets, whose workers must learn the epoch, pass `persistent=False`).
    `batching`: `batch_sampler=...` or `batch_size=...`.
    """
    extra: dict = {"multiprocessing_context": "spawn", "persistent_workers": persistent, "worker_init_fn": _init_worker}
    return torch.utils.data.DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        **(extra if workers > 0 else {}),
        **batching,
    )


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


def multiscale_crop(
    height: int, width: int, size: int, scales, flip: bool, rng: np.random.Generator, train: bool = True
) -> CropBox:
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


def _resize_stack(
    stack: np.ndarray, box: CropBox, x: int, y: int, w: int, h: int, out: int, interpolation: int, into=None
):
    """Crop (x, y, w, h) of each (H, W, C) array of `stack` (C <= 4), resize to (out, out), mirror if `box.flip`.

    Written into `into` (returned): `(len(stack), out, out, C)` arrays, e.g. a list of rows of a
    larger array; by default a new array. One `cv2.resize` (and `cv2.flip`) per frame, in place:
    every OpenCV version resizes 4 channels at once, whereas folding time into channels hits the
    per-call channel limit (512 in OpenCV 4, 128 in OpenCV 5) and is 3-6x slower
    (bench/resize_bench.py); mirroring with OpenCV takes a fraction of numpy's reversed copy.
    """
    if into is None:
        into = np.empty((len(stack), out, out, stack.shape[3]), stack.dtype)
    if w == h == out:  # nothing to resize (e.g. a full-frame crop at the decoded size)
        crops = stack[:, y : y + h, x : x + w]
        for source, target in zip(crops[:, :, ::-1] if box.flip else crops, into):
            target[...] = source
        return into
    for source, target in zip(stack[:, y : y + h, x : x + w], into):
        image = cv2.resize(source, (out, out), dst=target, interpolation=interpolation)
        if box.flip:
            image = cv2.flip(image, 1, dst=image)
        if image is not target:  # OpenCV made an array of its own
            target[...] = image.reshape(target.shape)
    return into


def augment_frames(frames: np.ndarray, box: CropBox, into=None) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, S, S, 3), written into `into` when given (see `_resize_stack`)."""
    return _resize_stack(frames, box, box.x, box.y, box.w, box.h, box.size, cv2.INTER_LINEAR, into)


def augment_flow(flow: np.ndarray, box: CropBox) -> np.ndarray:
    """float32 (T, H, W, 2) px -> (T, S, S, 2): vectors scaled by the resize, dx negated on flip."""
    out = _resize_stack(flow, box, box.x, box.y, box.w, box.h, box.size, cv2.INTER_LINEAR)
    scale = np.array([box.size / box.w, box.size / box.h], np.float32)
    if box.flip:
        scale[0] = -scale[0]
    return out * scale


def augment_vectors(motion: np.ndarray, box: CropBox, cell: int = 8) -> np.ndarray:
    """Codec vectors (T, h8, w8, 2) on the 8x8 grid -> (T, S/8, S/8, 2), like `augment_flow`."""
    x0, y0 = box.x // cell, box.y // cell
    w, h = max(1, math.ceil(box.w / cell)), max(1, math.ceil(box.h / cell))
    out = _resize_stack(motion, box, x0, y0, w, h, max(1, box.size // cell), cv2.INTER_NEAREST)
    scale = np.array([box.size / box.w, box.size / box.h], np.float32)
    if box.flip:
        scale[0] = -scale[0]
    return out * scale


# ---------------------------------------------------------------- flow of a span


class FlowUnavailable(MotionMAEError):
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
    made = []
    for params in sorted(path.glob("flow-*/params.json")):
        try:
            made.append(MotionCache.from_dir(params.parent))
        except CacheError:  # an older format: `prepare` makes a new folder beside it
            continue
    matching = [c for c in made if c.params.short_side == data.short_side]
    if len(matching) > 1:
        raise FlowUnavailable(
            f"{path} holds several motion caches at short side {data.short_side} "
            f"({', '.join(c.dir.name for c in matching)}): set data.cache to one of them"
        )
    return matching[0] if matching else MotionCache(path, CacheParams(short_side=data.short_side))


class SpanFlow:
    """Flow of frames `start..stop` of a video under a crop box: float32 `(stop - start, S, S, 2)`, output px.

    Read from the motion cache straight into the box (one resampling of the
    stored field); when the video has no entry, computed from the decoded
    frames if `data.flow_on_the_fly`, else `FlowUnavailable` names it. With
    `data.in_memory` a video's whole flow is read once at frame resolution
    (float16) and kept; spans are then cut from it and resampled into the box.
    """

    def __init__(self, data, cache: MotionCache | None = None):
        self.cache = cache or open_cache(data)
        self.on_the_fly = data.flow_on_the_fly
        self.kept: dict[str, np.ndarray] | None = {} if data.in_memory else None

    def frames(self, item: Item) -> int | None:
        """Frame count of the video's cache entry (what decoded when it was made); None without one."""
        try:
            return self.cache.info(item.key).num_frames
        except CacheError:
            return None

    def stored(self, item: Item, start: int, stop: int, places=None) -> tuple[np.ndarray, np.ndarray] | None:
        """What the samples of one decoded span share: the places (sorted offsets from `start`; default
        all) of the fields `start..stop` that the entry holds, and those fields as stored (grid
        resolution, `MotionCache.stored`); None when the video has no entry or flow is kept in memory."""
        if self.kept is not None:
            return None
        try:
            info = self.cache.info(item.key)
        except CacheError:
            return None
        places = np.arange(stop - start) if places is None else np.asarray(places, np.int64)
        inside = places[start + places < info.num_flows]
        return inside, self.cache.stored(item.key, start + inside)

    def __call__(
        self, item: Item, frames: np.ndarray, start: int, stop: int, box: CropBox, places=None, stored=None
    ) -> np.ndarray:
        """`places`: the fields to read, sorted offsets from `start` (default all); the others are zeros.
        `stored`: `self.stored(item, start, stop, places)`, when the caller has it already."""
        try:
            info = self.cache.info(item.key)
        except CacheError as err:
            if not self.on_the_fly:
                raise FlowUnavailable(
                    f"{err}; run `motionmae prepare` on its list first, or set data.flow_on_the_fly=true"
                ) from None
            return self.compute(frames, box)[: stop - start]
        flow = np.zeros((stop - start, box.size, box.size, 2), np.float32)  # past the end: no motion
        if self.kept is not None:
            places = np.arange(stop - start) if places is None else np.asarray(places, np.int64)
            inside = places[start + places < info.num_flows]
            if item.key not in self.kept:
                self.kept[item.key] = self.cache.read(item.key, 0, info.num_flows).astype(np.float16)
            if len(inside):
                flow[inside] = augment_flow(self.kept[item.key][start + inside].astype(np.float32), box)
            return flow
        stored = stored or self.stored(item, start, stop, places)
        assert stored is not None, "the video has an entry (info above) and its flow is not kept in memory"
        inside, fields = stored
        self.cache.resample(
            item.key,
            fields,
            (box.size, box.size),
            (box.x, box.y, box.w, box.h),
            box.flip,
            out=[flow[p] for p in inside],
        )
        return flow

    def compute(self, frames: np.ndarray, box: CropBox) -> np.ndarray:
        """Flow between consecutive decoded frames uint8 `(T, H, W, 3)` with the cache's flow
        parameters, under the box: `(T - 1, S, S, 2)` output px."""
        return augment_flow(video_flow(frames, self.cache.params.flow), box)


def _cut_cache(data) -> MotionCache | None:
    """The motion cache to read shot cuts from when no flow is read (MGM on a pixel target), if any."""
    try:
        return open_cache(data)
    except (FlowUnavailable, CacheError):
        return None


# ---------------------------------------------------------------- decoding the frames a sample reads

# ---------------------------------------------------------------- pretraining dataset


class MemoryVideo:
    """A whole video decoded once and kept, read like a `VideoReader`: `len()`, `read(indices, motion)`."""

    def __init__(self, path, short_side: int | None, motion: bool):
        with VideoReader(path, short_side) as reader:
            self.clip = reader.read(np.arange(len(reader)), motion=motion)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Nothing to close: the frames stay in memory for the next sample."""

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
    none has one), unless flow is computed on the fly; `left_out` lists them
    as "skipped" entries. A video that fails to read is reported on stderr,
    listed in the sample's "skipped" and replaced by the next one in the list.

    With `data.repeats` N > 1 an index gives a list of N samples of one decoded
    span (repeated sampling): the same frames, each with its own crop, flip,
    frame order and mask; the first from `sample_rng(seed, index, epoch)` as
    without repeats, sample r from `repeat_rng`. `collate` joins the lists.

    `cache`: the motion cache to read instead of `data.cache`'s (`shards` reads entries from memory).

    `reads`: the places in the span of the frames and flow fields the target
    reads (`Target.span_reads`). With `data.fast_loader`, only those and the
    input frames are decoded, converted and resampled; the
    others are zeros. Shuffled frames and flow computed on the fly read the
    whole span; MGM masks read the reader's codec vectors (its decode) and, with
    flow, every flow field.
    """

    def __init__(
        self,
        items: list[Item],
        data,
        raw_span: int,
        masks: MaskGenerator,
        seed: int = 0,
        needs_flow: bool = True,
        train: bool = True,
        reads: tuple | None = None,
        cache: MotionCache | None = None,
    ):
        if data.repeats < 1:
            raise ConfigError(f"data.repeats must be at least 1, got {data.repeats}")
        self.data, self.raw_span, self.masks = data, raw_span, masks
        self.seed, self.needs_flow, self.train = seed, needs_flow, train
        self.span_flow = SpanFlow(data, cache) if needs_flow else None
        whole = (np.arange(raw_span), np.arange(raw_span - 1))
        if reads is None or not data.fast_loader or data.shuffle_frames or data.flow_on_the_fly:
            reads = whole
        elif masks.needs_motion:  # MGM's flow guidance reads the flow between any two input frames
            reads = (reads[0], whole[1])
        inputs = np.arange(data.frames) * data.stride
        self.frames_read = np.union1d(inputs, np.asarray(reads[0], np.int64))  # places in the span
        self.flows_read = np.asarray(reads[1], np.int64)
        self.input_places = np.searchsorted(self.frames_read, inputs)  # of the input frames in frames_read
        self.listed = len(items)  # videos in the list given; `positions[i]`: items[i]'s place in it
        self.positions = list(range(len(items)))
        self.left_out: list[dict] = []
        self.videos: dict[str, MemoryVideo] | None = {} if data.in_memory else None
        if self.span_flow is not None and not (data.flow_on_the_fly or data.shuffle_frames):
            self._leave_out_uncached(items, self.span_flow.cache)
        self.items = [items[p] for p in self.positions]
        self.cut_cache: MotionCache | None
        if self.span_flow is not None:
            self.cut_cache = self.span_flow.cache
        else:  # MGM on a pixel target reads no flow, but the cuts still guide it
            self.cut_cache = (cache or _cut_cache(data)) if masks.needs_motion else None

    def _leave_out_uncached(self, items: list[Item], cache: MotionCache) -> None:
        missing = [p for p, item in enumerate(items) if not cache.entry_path(item.key).is_file()]
        if not missing:
            return
        hint = f"run `motionmae prepare LIST --cache {cache.root}` first, or set data.flow_on_the_fly=true"
        if len(missing) == len(items):
            raise FlowUnavailable(
                f"none of the {len(items)} videos is in the motion cache {cache.dir} (first: {items[0].path}); {hint}"
            )
        names = ", ".join(str(items[p].path) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
        logger.warning(
            "%d of %d videos are not in the motion cache %s and are left out: %s",
            len(missing),
            len(items),
            cache.dir,
            names,
        )
        self.left_out = [
            {
                "position": p,
                "path": str(items[p].path),
                "kind": "not_in_cache",
                "reason": f"not in the motion cache {cache.dir}",
            }
            for p in missing
        ]
        self.positions = sorted(set(self.positions) - set(missing))

    def __len__(self) -> int:
        return len(self.items)

    def span_cuts(self, item: Item, start: int) -> np.ndarray:
        """Bool `(raw_span - 1,)`: raw frames start + t and start + t + 1 lie across a shot cut
        (from the motion cache; none when the video has no entry)."""
        if self.cut_cache is not None:
            with contextlib.suppress(CacheError):  # no entry: no cuts known
                return self.cut_cache.cuts(item.key, start, start + self.raw_span - 1)
        return np.zeros(self.raw_span - 1, bool)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rngs = [sample_rng(self.seed, index, epoch)] + [
            repeat_rng(self.seed, index, epoch, r) for r in range(1, self.data.repeats)
        ]
        skipped = []
        for attempt in range(len(self.items)):
            slot = (index + attempt) % len(self.items)
            try:
                samples = self.load(self.items[slot], rngs)
                break
            except (VideoError, FlowUnavailable, CacheError) as err:
                skipped.append(skip_entry(self.positions[slot], self.items[slot], err))
        else:
            raise ListError("no video in the list could be read")
        video = torch.tensor(self.positions[slot])
        samples = [
            {**sample, "video": video, "key": self.items[slot].key, "skipped": skipped if r == 0 else []}
            for r, sample in enumerate(samples)
        ]
        return samples if self.data.repeats > 1 else samples[0]

    def load(self, item: Item, rngs: list[np.random.Generator]) -> list[dict]:
        """One sample per generator, all of one decoded span."""
        span = self.read(item, rngs[0])
        return [self.augment(item, span, rng)[0] for rng in rngs]

    def open(self, item: Item):
        """A reader of the item's video; with `data.in_memory`, the video decoded once and kept."""
        if self.videos is None:
            return VideoReader(item.path, self.data.short_side, torch.get_num_threads())
        if item.key not in self.videos:
            motion = self.masks.needs_motion and not self.data.shuffle_frames
            self.videos[item.key] = MemoryVideo(item.path, self.data.short_side, motion)
        return self.videos[item.key]

    def sample(self, item: Item, rng: np.random.Generator, start: int | None = None) -> tuple[dict, CropBox]:
        """One sample (the dict of the module docstring) and its crop box in decoded pixels.

        `start`: the span's first raw frame; by default random in training, the middle otherwise.
        """
        return self.augment(item, self.read(item, rng, start), rng)

    def read(self, item: Item, rng: np.random.Generator, start: int | None = None) -> Span:
        """Decode the span of a sample (`start` as in `sample`)."""
        d = self.data
        cached = self.span_flow.frames(item) if self.span_flow is not None and not d.shuffle_frames else None
        with self.open(item) as reader:
            count = min(len(reader), cached or len(reader))  # a frame both have
            last_start = max(0, count - self.raw_span)
            if start is None:
                start = int(rng.integers(last_start + 1)) if self.train else last_start // 2
            indices = np.minimum(start + np.arange(self.raw_span), count - 1)  # short videos repeat their last frame
            clip = reader.read(indices[self.frames_read], motion=self.masks.needs_motion and not d.shuffle_frames)
            frames, vectors, has_vectors = clip.frames, clip.motion, clip.has_motion
        stored = None
        if self.span_flow is not None and not d.shuffle_frames:
            stored = self.span_flow.stored(item, start, start + self.raw_span - 1, self.flows_read)
        return Span(start, indices, frames, vectors, has_vectors, shot_ids(self.span_cuts(item, start)), stored)

    def augment(self, item: Item, span: Span, rng: np.random.Generator) -> tuple[dict, CropBox]:
        """A sample of a decoded span: its own crop, flip, frame order (`shuffle_frames`) and mask."""
        d = self.data
        box = multiscale_crop(span.frames.shape[1], span.frames.shape[2], d.size, d.scales, d.flip, rng, self.train)
        indices, decoded, shot = span.indices, span.frames, span.shot
        if d.shuffle_frames:
            order = rng.permutation(len(indices))
            indices, decoded, shot = indices[order], decoded[order], shot[order]
        frames = self.span_frames(decoded, box)
        flow = None
        if self.span_flow is not None and d.shuffle_frames:
            flow = self.span_flow.compute(decoded, box)
        elif self.span_flow is not None:
            flow = self.span_flow(
                item, decoded, span.start, span.start + self.raw_span - 1, box, self.flows_read, span.stored_flow
            )
        inputs = slice(0, (d.frames - 1) * d.stride + 1, d.stride)
        motion = has_motion = None
        if span.motion is not None and span.has_motion is not None:
            places = self.input_places
            motion, has_motion = augment_vectors(span.motion[places], box), span.has_motion[places]
        cuts = np.diff(shot) != 0  # (T_raw - 1,) pairs of the (shuffled) span across a shot cut
        mask, source = self.masks.for_clip(
            Clip(frames[inputs], motion, has_motion, indices[inputs]), rng, flow, d.stride, cuts
        )
        return {
            "frames": torch.from_numpy(frames),
            "flow": torch.from_numpy(flow) if flow is not None else torch.zeros(0),
            "mask": torch.from_numpy(mask),
            "cuts": torch.from_numpy(cuts),
            "label": torch.tensor(item.label),
            "mask_source": source,
        }, box

    def span_frames(self, decoded: np.ndarray, box: CropBox) -> np.ndarray:
        """uint8 `(T_raw, S, S, 3)`: the decoded frames at `frames_read` under the box; zeros elsewhere."""
        if len(self.frames_read) == self.raw_span:
            return augment_frames(decoded, box)
        frames = np.zeros((self.raw_span, box.size, box.size, 3), np.uint8)
        augment_frames(decoded, box, into=[frames[place] for place in self.frames_read])
        return frames


@dataclass(frozen=True)
class Span:
    """The decoded raw span of a sample, before augmentation."""

    start: int  # first raw frame
    indices: np.ndarray  # int64 (T_raw,) frame of the video at each place (short videos repeat the last)
    frames: np.ndarray  # uint8 (F, H, W, 3) at the places `PretrainDataset.frames_read`, decoded size
    motion: np.ndarray | None  # codec vectors (F, h8, w8, 2) at the places of `frames`, for MGM; else None
    has_motion: np.ndarray | None  # bool (F,)
    shot: np.ndarray  # int (T_raw,) shot of each place (`cuts.shot_ids`)
    stored_flow: tuple | None = None  # `SpanFlow.stored` of the span's flow fields, shared by its samples


# ---------------------------------------------------------------- classification clips


@dataclass(frozen=True)
class ClipSpec:
    """How a classification clip is cut from a video."""

    frames: int = 16
    sampling: str = "dense"  # dense: `frames` frames `stride` apart | segment: one frame of each of `frames` segments
    stride: int = 4
    size: int = 224  # crop side fed to the model (pixels)
    short_side: int | None = 256  # decode size (pixels)


def clip_indices(
    count: int, spec: ClipSpec, rng: np.random.Generator | None = None, clip: int = 0, clips: int = 1
) -> np.ndarray:
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


def random_resized_crop(
    height: int, width: int, size: int, area, aspect, flip: bool, rng: np.random.Generator
) -> CropBox:
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
    return np.stack(
        [
            cv2.warpAffine(
                f,
                matrix,
                (w, h),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=FILL,
            )
            for f in frames
        ]
    )


def _auto_contrast(frames, level, rng):
    lo, hi = frames.reshape(-1, 3).min(0).astype(np.float32), frames.reshape(-1, 3).max(0).astype(np.float32)
    values = np.arange(256, dtype=np.float32)
    tables = [np.clip((values - a) * 255 / (b - a), 0, 255) if b > a else values for a, b in zip(lo, hi)]
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
        return _warp(
            frames, np.array([[1, 0, shift], [0, 1, 0]] if axis == 0 else [[1, 0, 0], [0, 1, shift]], np.float32)
        )

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
    "solarize_add": lambda f, level, rng: np.where(
        f < 128, np.minimum(f.astype(np.int16) + int(level * 110), 255), f
    ).astype(np.uint8),
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
    skip and count it. Short videos repeat their last frame (`clip_indices`).

        frames  uint8 (T, S, S, 3) in training, (V, T, S, S, 3) in testing
        label   int64 ()
        ok      bool  ()   (testing)
        video   int64 ()   position of the video read in `items` (-1: none)
        skipped list of {"position", "path", "kind", "reason"} (see `PretrainDataset`)
    """

    def __init__(
        self,
        items: list[Item],
        spec: ClipSpec,
        augment: TrainAugment | None = None,
        seed: int = 0,
        repeats: int = 1,
        clips: int = 1,
        crops: int = 1,
    ):
        self.items, self.spec, self.augment = items, spec, augment
        self.seed, self.repeats, self.clips, self.crops = seed, repeats, clips, crops

    def __len__(self) -> int:
        return len(self.items) * (self.repeats if self.augment else 1)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.augment is None:
            item, skipped = self.items[index], []
            try:
                frames = self.views(item)
            except VideoError as err:
                skipped.append(skip_entry(index, item, err))
                frames = self.blank()
            return {
                "frames": torch.from_numpy(frames),
                "label": torch.tensor(item.label),
                "ok": torch.tensor(not skipped),
                "video": torch.tensor(-1 if skipped else index),
                "skipped": skipped,
            }
        skipped = []
        for attempt in range(len(self.items)):
            position = (index + attempt) % len(self.items)
            try:
                frames = self.train_clip(self.items[position], sample_rng(self.seed, index, epoch))
                return {
                    "frames": torch.from_numpy(frames),
                    "label": torch.tensor(self.items[position].label),
                    "video": torch.tensor(position),
                    "skipped": skipped,
                }
            except VideoError as err:
                skipped.append(skip_entry(position, self.items[position], err))
        raise ListError("no video in the list could be read")

    def blank(self) -> np.ndarray:
        """uint8 (clips * crops, T, S, S, 3) zeros: the views of a video that could not be read."""
        s = self.spec
        return np.zeros((self.clips * self.crops, s.frames, s.size, s.size, 3), np.uint8)

    def train_clip(self, item: Item, rng: np.random.Generator) -> np.ndarray:
        """uint8 (T, S, S, 3)."""
        s, a = self.spec, self.augment
        assert a is not None, "training clips need a TrainAugment"
        with VideoReader(item.path, s.short_side, torch.get_num_threads()) as reader:
            frames = reader.read(clip_indices(len(reader), s, rng)).frames
        box = random_resized_crop(frames.shape[1], frames.shape[2], s.size, a.area, a.aspect, a.flip, rng)
        frames = augment_frames(frames, box)
        return a.randaug(frames, rng) if a.randaug else frames

    def views(self, item: Item) -> np.ndarray:
        """uint8 (clips * crops, T, S, S, 3): every temporal clip at every spatial crop."""
        s = self.spec
        with VideoReader(item.path, s.short_side, torch.get_num_threads()) as reader:
            indices = [clip_indices(len(reader), s, clip=c, clips=self.clips) for c in range(self.clips)]
            frames = reader.read(np.concatenate(indices)).frames
        frames = frames.reshape(self.clips, s.frames, *frames.shape[1:])
        boxes = view_crops(frames.shape[2], frames.shape[3], s.size, self.crops)
        return np.stack([augment_frames(clip, box) for clip in frames for box in boxes])
