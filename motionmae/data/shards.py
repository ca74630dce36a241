"""Sharded data for millions of videos: WebDataset tar shards written by `motionmae pack`, streamed to training.

A shard set is `NAME-000000.tar, NAME-000001.tar, ...` in WebDataset's format (a plain tar
whose members of one sample share a name), each with a sidecar `NAME-000000.json`. Sample k of
a shard:

    {k:06d}.video   the video file's bytes, unchanged (its own container: mp4, avi, ...)
    {k:06d}.flow    the video's motion-cache entry file, unchanged (`motionmae.io.cache`: flow and shot cuts)
    {k:06d}.cls     the label in ASCII (-1: unlabelled)
    {k:06d}.json    key, path, label, num_frames, fps, frame_size, source_bytes, the cache
                    {key, version, short_side, params}, and the bytes and sha256 of video and flow

Shard k holds the videos k*size .. (k+1)*size - 1 of the list sorted by key (minus those it
skipped: not in the motion cache, or an entry made from another file). The sidecar lists the
samples (key, label), the videos planned and skipped and the cache; readers take the sample
counts from it, so an epoch is split exactly without reading a tar first. Its name is the
shard's with the last ".tar" made ".json", in URLs too (`pipe:curl -s https://host/a-000001.tar`
-> `pipe:curl -s https://host/a-000001.json`).

Reading: `data.train` and the lists of `finetune`, `evaluate` and `linear-probe` take a shard
pattern (`shards/train-{000000..000099}.tar`, or any URL WebDataset opens: `pipe:`, http(s), ...).
Samples go through the same pipeline as videos of a list (`PretrainDataset`, `ClipDataset`),
decoded from memory. In training:

- epoch e visits the shards in a seeded order; that sequence of samples is cut into one
  contiguous range per process (the same number of whole batches each; the remainder, less
  than a global batch, is left for this epoch as `EpochSampler` does) and each range into one per
  loader worker, so every sample is read at most once per epoch and a shard by few readers;
- each worker shuffles its range through a buffer of `buffer` samples, whose draws are made in
  advance: the order is known without reading;
- resuming at batch b of an epoch skips what the first b batches held: those samples are not
  decoded, and shards holding only them are not opened. Exact when resumed with the same
  number of processes and loader workers;
- every sample's random draws come from `sample_rng(seed, position, epoch)`, as for a list
  (position: its place in the shard set).

Every sample is checked against the sizes and sha256 in its json. One that does not match,
that its shard does not deliver, or that fails to decode is reported (the "skipped" of the
tally) and, in training, replaced by the next good sample of the same worker (the last one at
the end), so every process still makes the same number of steps. Only the four members above
are read, never decoded by extension (no pickle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import re
import sys
import tarfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from motionmae.common.files import atomic_open, write_atomic
from motionmae.common.lists import Item, ListError, read_list
from motionmae.common.rng import sample_rng
from motionmae.common.tally import VideoTally
from motionmae.data.datasets import ClipDataset, EpochSampler, FlowUnavailable, PretrainDataset, make_loader, skip_entry
from motionmae.io.cache import FORMAT_VERSION, CacheError, CacheParams, MotionCache
from motionmae.io.video import NamedBytes, VideoError

SHARD_FORMAT = 1  # sidecar and sample layout; bump when it changes
BUFFER = 64  # default shuffle buffer per loader worker (samples: videos + cache entries held in memory)
SHARD_ORDER, BUFFER_DRAWS = 0x5348, 0x4246  # seed tags, so these streams never meet `sample_rng`'s


class ShardError(ListError):
    """A shard pattern or sidecar that cannot be used; the message names it."""


class SampleError(Exception):
    """A sample of a shard that cannot be used; `problem` says why."""

    def __init__(self, name, problem: str):
        super().__init__(f"{name}: {problem}")
        self.problem = problem


class CorruptSampleError(SampleError):
    """Bytes that do not match the sizes and sha256 of the sample's json, or an unreadable json."""


class MissingSampleError(SampleError):
    """A sample the sidecar lists that its shard does not deliver (truncated or unreadable shard)."""


# ---------------------------------------------------------------- patterns and sidecars


def is_shards(source) -> bool:
    """True for a shard pattern or URL (ending in .tar, or `pipe:`, `http:`, ...); False for a list, folder or video."""
    text = str(source).strip()
    return text.endswith(".tar") or re.match(r"^[a-z][a-z0-9+.-]+:", text, re.IGNORECASE) is not None


def sidecar_url(url: str) -> str:
    """The sidecar of a shard: its name with the last ".tar" made ".json"."""
    head, tar, tail = url.rpartition(".tar")
    if not tar:
        raise ShardError(f"{url}: a shard's name must contain '.tar' (its sidecar is the name with '.json')")
    return head + ".json" + tail


def _cache_info(cache: MotionCache) -> dict:
    return {"key": cache.params.key(), "version": FORMAT_VERSION, "short_side": cache.params.short_side}


def read_sidecar(url: str) -> dict:
    """A shard's sidecar: {"format", "samples": [{"key", "label"}], "cache", ...}; `ShardError` if unusable."""
    from webdataset.gopen import gopen

    name = sidecar_url(url)
    try:
        with gopen(name, "rb") as f:
            side = json.loads(f.read())
        if side.get("format") != SHARD_FORMAT:
            raise ValueError(f"format {side.get('format')}, this motionmae reads {SHARD_FORMAT}")
        side["samples"] = [{"key": str(s["key"]), "label": int(s["label"])} for s in side["samples"]]
        side["cache"] = {k: side["cache"][k] for k in ("key", "version", "short_side")}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ShardError(
            f"{name}: unreadable sidecar of the shard {url} ({err.__class__.__name__}: {err}); "
            f"`motionmae pack` writes it beside the shard"
        ) from None
    return side


class ShardIndex(list):
    """The samples of a shard set as `Item`s in shard order (path "URL:key"), read from the sidecars.

    `urls[j]` holds `counts[j]` samples, the first at position `offsets[j]`; `cache` is the
    motion cache the set was packed from ({"key", "version", "short_side"}).
    """

    def __init__(self, pattern, urls: list[str], sidecars: list[dict]):
        super().__init__(
            Item(f"{url}:{s['key']}", s["label"], s["key"])
            for url, side in zip(urls, sidecars)
            for s in side["samples"]
        )
        self.pattern, self.urls = str(pattern), list(urls)
        self.counts = np.array([len(side["samples"]) for side in sidecars], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        caches = {json.dumps(side["cache"], sort_keys=True) for side in sidecars}
        if len(caches) > 1:
            raise ShardError(
                f"{pattern}: the shards were packed from {len(caches)} different motion caches; "
                f"use shards of one `pack` run"
            )
        self.cache = sidecars[0]["cache"]

    @classmethod
    def open(cls, pattern) -> ShardIndex:
        """Expand a pattern (braces, `::`-separated lists) and read every shard's sidecar."""
        from webdataset.shardlists import expand_urls

        urls = expand_urls(str(pattern).strip())
        with ThreadPoolExecutor(8) as pool:  # sidecars over the network: a few in flight
            sidecars = list(pool.map(read_sidecar, urls))
        index = cls(pattern, urls, sidecars)
        if not index:
            raise ShardError(f"{pattern}: the {len(urls)} shards hold no samples")
        return index

    def check_cache(self, short_side: int | None) -> None:
        """The flow in the shards is usable at `data.short_side`, by this motionmae's cache format."""
        c = self.cache
        if c["version"] != FORMAT_VERSION:
            raise ShardError(
                f"{self.pattern}: packed from a motion cache of format {c['version']}; this motionmae "
                f"reads format {FORMAT_VERSION}: run `motionmae prepare` and `motionmae pack` again"
            )
        if c["short_side"] != short_side:
            raise ShardError(
                f"{self.pattern}: packed from a motion cache made at short side {c['short_side']}; "
                f"set data.short_side={c['short_side']}"
            )


def read_items(source) -> list[Item]:
    """The videos of a list file, folder or video (`common.lists.read_list`), or the samples of a shard pattern."""
    return ShardIndex.open(source) if is_shards(source) else read_list(source)


# ---------------------------------------------------------------- reading one shard


@dataclass(frozen=True)
class Packed:
    """One sample of a shard, checked against its json."""

    position: int  # in the shard set
    item: Item  # path "URL:key"
    shard: str  # URL
    video: bytes
    entry: bytes  # the motion-cache entry file
    params: CacheParams  # of that entry


def shard_samples(url: str):
    """The samples of one shard, streamed: {"__key__", member suffix: bytes, ...}."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    with gopen(url, "rb") as stream:
        yield from group_by_keys({**f, "__url__": url} for f in tar_file_iterator(stream))


def unpack(sample: dict, item: Item, position: int, url: str) -> Packed:
    """Check a shard's sample against its json (sizes, sha256, key); raises `CorruptSampleError`."""
    try:
        meta = json.loads(sample["json"])
        for part in ("video", "flow"):
            data = sample[part]
            if len(data) != meta["bytes"][part] or hashlib.sha256(data).hexdigest() != meta["sha256"][part]:
                raise CorruptSampleError(
                    item.path, f"its {part} bytes do not match the checksum in its json (damaged shard?)"
                )
        if meta["key"] != item.key:
            raise CorruptSampleError(item.path, f"the shard holds {meta['key']} here; its sidecar is out of date")
        params = CacheParams.from_dict(meta["cache"]["params"])
    except (KeyError, ValueError, TypeError) as err:
        raise CorruptSampleError(item.path, f"unreadable sample ({err.__class__.__name__}: {err})") from None
    return Packed(position, item, url, sample["video"], sample["flow"], params)


class ShardEntries(MotionCache):
    """The motion-cache entry of the sample being decoded, held in memory: `hold(...)`, then read it as a cache."""

    def __init__(self) -> None:
        super().__init__("shards", CacheParams())
        self.entries: dict[str, bytes] = {}

    def hold(self, packed: Packed) -> None:
        self.params, self.dir = packed.params, Path(packed.shard)
        self.entries, self._infos = {packed.item.key: packed.entry}, {}

    def _open_entry(self, video: str):
        if video not in self.entries:
            raise FileNotFoundError(video)
        return io.BytesIO(self.entries[video])


# ---------------------------------------------------------------- the stream


def buffer_order(n: int, size: int, rng: np.random.Generator) -> list[int]:
    """The order in which a shuffle buffer of `size` emits a stream of n items: every item enters,
    and once the buffer is full a random one leaves; the rest leave shuffled at the end."""
    out, held = [], []
    for i in range(n):
        held.append(i)
        if len(held) >= size:
            j = int(rng.integers(len(held)))
            out.append(held[j])
            held[j] = held[-1]
            held.pop()
    rng.shuffle(held)
    return out + held


class ShardStream(torch.utils.data.IterableDataset):
    """The samples of a shard set made by `pipeline` (a `PretrainDataset` or `ClipDataset` of no items,
    which decodes them), split over processes and loader workers; see the module docstring.

    Training (a `PretrainDataset`, or a `ClipDataset` with `augment`): per epoch, each process's
    share of `place(rank, world, batch_size)`, in `batches()` whole batches, shuffled;
    `set_epoch(e, skip_batches=b)` starts epoch e at its b-th batch. Repeated augmentation
    (`ClipDataset.repeats`) makes `repeats` elements of every sample, element `position *
    repeats + r` drawn with `sample_rng(seed, r * N + position, epoch)` as in `ClipDataset`.
    Testing: each process's contiguous share of every sample once, in order; a sample that fails
    gives `ok=False` and blank frames. Samples are those of `pipeline` plus "video" (the position
    of the sample read, -1 for none) and "skipped".
    """

    def __init__(self, index: ShardIndex, pipeline, entries: ShardEntries | None = None, buffer: int = BUFFER):
        self.index = self.items = index
        self.pipeline, self.entries, self.buffer = pipeline, entries, max(1, buffer)
        self.train = isinstance(pipeline, PretrainDataset) or pipeline.augment is not None
        self.repeats = pipeline.repeats if isinstance(pipeline, ClipDataset) and self.train else 1
        self.seed = pipeline.seed
        self.listed = len(index)
        self.left_out: list[dict] = []
        self.masks = pipeline.masks if isinstance(pipeline, PretrainDataset) else None
        self.clips, self.crops = getattr(pipeline, "clips", 1), getattr(pipeline, "crops", 1)  # views per video
        self.rank, self.world, self.batch_size = 0, 1, 1
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return len(self.index) * self.repeats

    def place(self, rank: int, world: int, batch_size: int) -> None:
        self.rank, self.world, self.batch_size = rank, world, batch_size
        if self.train and self.batches() == 0:
            raise ListError(
                f"{self.index.pattern}: {len(self)} samples are fewer than one global batch ({batch_size} x {world})"
            )

    def batches(self) -> int:
        """Batches of each process per epoch (training)."""
        return len(self) // (self.batch_size * self.world)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def sequence(self) -> np.ndarray:
        """int64 (len(self),): the epoch's elements in reading order; in training the shards in a seeded order."""
        shards = len(self.index.urls)
        order = (
            np.random.default_rng((SHARD_ORDER, self.seed, self.epoch)).permutation(shards)
            if self.train
            else np.arange(shards)
        )
        offsets = self.index.offsets * self.repeats
        return np.concatenate([np.arange(offsets[j], offsets[j + 1]) for j in order])

    def share(self, worker: int, workers: int) -> tuple[int, int, int, int]:
        """(first, stop, outputs done, logical worker) of a loader worker of this process in `sequence()`.

        In training, worker i plays logical worker (i + skip) mod workers: the loader takes batches
        from its workers in turn, so after `skip` batches the turn is at that one.
        """
        if not self.train:
            lo, hi = (len(self) * r // self.world for r in (self.rank, self.rank + 1))
            return lo + (hi - lo) * worker // workers, lo + (hi - lo) * (worker + 1) // workers, 0, worker
        size, batches, skip = self.batch_size, self.batches(), self.skip
        logical = (worker + skip) % workers
        counts = [batches // workers + (w < batches % workers) for w in range(workers)]
        first = (self.rank * batches + sum(counts[:logical])) * size
        done = skip // workers + (logical < skip % workers)
        return first, first + counts[logical] * size, done * size, logical

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        first, stop, done, logical = self.share(worker, workers)
        elements = self.sequence()[first:stop]
        if self.train:
            rng = np.random.default_rng((BUFFER_DRAWS, self.seed, self.epoch, self.rank, logical))
            order = buffer_order(len(elements), self.buffer, rng)
        else:
            order = list(range(len(elements)))
        yield from self._samples(self._in_order(elements, order[done:]))

    def _in_order(self, elements: np.ndarray, order: list[int]):
        """(element, `Packed` or `SampleError`) of `elements[i]` for i in `order`, reading the shards once
        in `elements`' order and holding what comes early (at most a buffer's worth)."""
        wanted = np.zeros(len(elements), bool)
        wanted[order] = True
        held, t = {}, 0
        for i, packed in self._read(elements, wanted):
            held[i] = packed
            while t < len(order) and order[t] in held:
                yield int(elements[order[t]]), held.pop(order[t])
                t += 1

    def _read(self, elements: np.ndarray, wanted: np.ndarray):
        """(i, `Packed` or `SampleError`) for every wanted i, in order; a shard is opened only when needed."""
        offsets = self.index.offsets
        positions = elements // self.repeats
        shards = np.searchsorted(offsets, positions, side="right") - 1
        for run in np.split(np.arange(len(elements)), np.flatnonzero(np.diff(shards)) + 1):
            run = run[wanted[run]]
            if not len(run):
                continue
            shard = int(shards[run[0]])
            by_sample: dict[int, list[int]] = {}
            for i in run.tolist():
                by_sample.setdefault(int(positions[i] - offsets[shard]), []).append(i)
            for k, packed in self._shard(shard, sorted(by_sample)):
                for i in by_sample[k]:
                    yield i, packed

    def _shard(self, shard: int, wanted: list[int]):
        """(k, `Packed` or `SampleError`) for the samples k in `wanted` (sorted) of one shard, streamed."""
        url, base = self.index.urls[shard], int(self.index.offsets[shard])
        problem, i = "its shard does not hold it", 0
        try:
            with contextlib.closing(shard_samples(url)) as samples:
                for sample in samples:
                    name = sample["__key__"]
                    k = int(name) if name.isdigit() else -1  # a member of another tool: ignored
                    while i < len(wanted) and wanted[i] < k:
                        yield wanted[i], MissingSampleError(self.index[base + wanted[i]].path, problem)
                        i += 1
                    if i < len(wanted) and wanted[i] == k:
                        try:
                            yield k, unpack(sample, self.index[base + k], base + k, url)
                        except CorruptSampleError as err:
                            yield k, err
                        i += 1
                    if i == len(wanted):
                        return
        except (OSError, tarfile.TarError, ValueError) as err:
            problem = f"its shard could not be read up to it ({err.__class__.__name__}: {err})"
        for k in wanted[i:]:
            yield k, MissingSampleError(self.index[base + k].path, problem)

    def _samples(self, pairs):
        """The samples of (element, `Packed` or `SampleError`) pairs, in their order. In training one that
        fails waits for the next good sample, which is decoded again with the failed element's draws."""
        queue, last = deque(), None  # entries [element, sample or None, skipped]
        for element, packed in pairs:
            entry = [element, None, []]
            self._attempt(entry, packed)
            if entry[1] is not None:
                last = packed
                for waiting in queue:
                    if waiting[1] is None:
                        self._attempt(waiting, packed)
            elif not self.train:
                entry[1] = self._blank(element)
            queue.append(entry)
            while queue and queue[0][1] is not None:
                element, sample, skipped = queue.popleft()
                yield {**sample, "skipped": skipped}
        for element, sample, skipped in queue:  # failed after the last good sample
            entry = [element, sample, skipped]
            if entry[1] is None and last is not None:
                self._attempt(entry, last)
            if entry[1] is None:
                first = skipped[0]
                raise ListError(
                    f"{self.index.pattern}: no sample of this loader worker's share could be read "
                    f"(first: {first['path']}: {first['reason']})"
                )
            yield {**entry[1], "skipped": skipped}

    def _attempt(self, entry: list, packed) -> None:
        """Make entry [element, sample, skipped]'s sample from `packed` (its own sample or a good one), or
        add why that failed to its skipped list."""
        if isinstance(packed, SampleError):
            position = entry[0] // self.repeats
            entry[2].append(skip_entry(position, self.index[position], packed))
            return
        try:
            entry[1] = {**self._make(packed, entry[0]), "video": torch.tensor(packed.position)}
        except (VideoError, FlowUnavailable, CacheError) as err:
            entry[2].append(skip_entry(packed.position, packed.item, err))

    def _make(self, packed: Packed, element: int) -> dict:
        """The pipeline's sample of `packed`, with the random draws of `element`."""
        position, r = divmod(element, self.repeats)
        rng = sample_rng(self.seed, r * len(self.index) + position, self.epoch)
        item = Item(NamedBytes(packed.video, packed.item.path), packed.item.label, packed.item.key)
        if self.entries is not None:
            self.entries.hold(packed)
        p = self.pipeline
        if isinstance(p, PretrainDataset):
            return {**p.load(item, [rng])[0], "key": item.key}
        if p.augment is not None:
            return {"frames": torch.from_numpy(p.train_clip(item, rng)), "label": torch.tensor(item.label)}
        return {"frames": torch.from_numpy(p.views(item)), "label": torch.tensor(item.label), "ok": torch.tensor(True)}

    def _blank(self, element: int) -> dict:
        """The test sample of a video that could not be read: blank frames, `ok` False."""
        return {
            "frames": torch.from_numpy(self.pipeline.blank()),
            "ok": torch.tensor(False),
            "label": torch.tensor(self.index[element].label),
            "video": torch.tensor(-1),
        }


# ---------------------------------------------------------------- data sets and loaders of lists or shards


def pretrain_dataset(
    items: list[Item], data, raw_span: int, masks, seed: int = 0, needs_flow: bool = True, reads: tuple | None = None
) -> PretrainDataset | ShardStream:
    """A `PretrainDataset` of a list's videos, or a `ShardStream` of a `ShardIndex`'s samples."""
    if not isinstance(items, ShardIndex):
        return PretrainDataset(items, data, raw_span, masks, seed=seed, needs_flow=needs_flow, reads=reads)
    if needs_flow or masks.needs_motion:
        items.check_cache(data.short_side)
    entries = ShardEntries()
    pipeline = PretrainDataset([], data, raw_span, masks, seed=seed, needs_flow=needs_flow, reads=reads, cache=entries)
    return ShardStream(items, pipeline, entries, data.shard_buffer)


def clip_dataset(
    items: list[Item], spec, augment=None, seed: int = 0, repeats: int = 1, clips: int = 1, crops: int = 1
) -> ClipDataset | ShardStream:
    """A `ClipDataset` of a list's videos, or a `ShardStream` of a `ShardIndex`'s samples (same arguments)."""
    dataset = ClipDataset(
        [] if isinstance(items, ShardIndex) else items,
        spec,
        augment,
        seed=seed,
        repeats=repeats,
        clips=clips,
        crops=crops,
    )
    return ShardStream(items, dataset) if isinstance(items, ShardIndex) else dataset


class StreamEpochs:
    """The sampler side of a `ShardStream` for a training loop: `len()` batches per epoch, `set_epoch`."""

    def __init__(self, stream: ShardStream):
        self.stream = stream

    def __len__(self) -> int:
        return self.stream.batches()

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.stream.set_epoch(epoch, skip_batches)


def epoch_loader(
    dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1, workers: int = 0, pin_memory: bool = False
):
    """(loader, sampler) of a training loop: `sampler.set_epoch(e, skip_batches=b)` starts epoch e at its
    b-th batch, `len(sampler)` is each process's batches per epoch. A list's data set is drawn by
    `EpochSampler`; a `ShardStream` splits itself, and its loader workers start again every epoch
    to learn which."""
    if isinstance(dataset, ShardStream):
        dataset.place(rank, world, batch_size)
        loader = make_loader(dataset, workers, pin_memory, persistent=False, batch_size=batch_size)
        return loader, StreamEpochs(dataset)
    sampler = EpochSampler(len(dataset), batch_size, seed=seed, rank=rank, world=world)
    return make_loader(dataset, workers, pin_memory, batch_sampler=sampler), sampler


def single_pass_loader(
    dataset, batch_size: int, workers: int = 0, pin_memory: bool = False, rank: int = 0, world: int = 1
) -> torch.utils.data.DataLoader:
    """Every sample once, this process's share of `world` (every world-th video of a list; a contiguous
    range of shards)."""
    if isinstance(dataset, ShardStream):
        dataset.place(rank, world, batch_size)
        return make_loader(dataset, workers, pin_memory, persistent=False, batch_size=batch_size)
    share = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    return make_loader(share, workers, pin_memory, batch_size=batch_size)


# ---------------------------------------------------------------- pack


class Unpackable(Exception):
    """A video `pack` leaves out; `kind` names why for the tally."""

    def __init__(self, kind: str, problem: str):
        super().__init__(problem)
        self.kind = kind


@dataclass
class PackReport:
    """What a `pack` run did, written as JSON beside the shards: the shared video counts over this
    share of the list (`tally.VideoTally`: read = in a finished shard) plus the fields below."""

    videos: VideoTally
    shards: int = 0  # shards of this share
    written: int = 0  # written by this run
    kept: int = 0  # finished by an earlier run, not rewritten
    samples: int = 0  # samples in this share's shards
    bytes: int = 0  # video and cache-entry bytes packed by this run
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.videos.skipped and not self.interrupted

    def to_dict(self) -> dict:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "videos"}
        return {**self.videos.to_dict(), **fields}


def _members(item: Item, cache: MotionCache) -> dict:
    """The tar members of one video: its bytes, its cache entry's bytes, label and metadata."""
    try:
        info = cache.info(item.key)
    except CacheError:
        raise Unpackable(
            "not_in_cache", f"not in the motion cache {cache.dir}; run `motionmae prepare` on the list first"
        ) from None
    try:
        video = Path(item.path).read_bytes()
        entry = cache.entry_path(item.key).read_bytes()
    except OSError as err:
        raise Unpackable("unreadable", f"{err.__class__.__name__}: {err}") from None
    if len(video) != info.source_bytes:
        raise Unpackable(
            "stale_cache_entry",
            f"its cache entry was made from a file of {info.source_bytes} bytes, "
            f"it has {len(video)}; run `motionmae prepare` again",
        )
    meta = {
        "key": item.key,
        "path": str(item.path),
        "label": item.label,
        "num_frames": info.num_frames,
        "fps": info.fps,
        "frame_size": list(info.frame_size),
        "source_bytes": info.source_bytes,
        "cache": {**_cache_info(cache), "params": dataclasses.asdict(cache.params)},
        "bytes": {"video": len(video), "flow": len(entry)},
        "sha256": {"video": hashlib.sha256(video).hexdigest(), "flow": hashlib.sha256(entry).hexdigest()},
    }
    return {
        "video": video,
        "flow": entry,
        "cls": str(item.label).encode(),
        "json": json.dumps(meta, sort_keys=True).encode(),
    }


def _plan(plan: list[Item]) -> list:
    return [[item.key, item.label] for item in plan]


def _finished(path: Path, plan: list[Item], cache: MotionCache) -> dict | None:
    """The sidecar of a shard that an earlier run finished with this plan and cache, else None."""
    try:
        side = json.loads(Path(sidecar_url(str(path))).read_text())
        done = (
            side.get("format") == SHARD_FORMAT
            and side.get("plan") == _plan(plan)
            and side.get("cache") == _cache_info(cache)
            and path.stat().st_size == side.get("bytes")
        )
    except (OSError, ValueError):
        return None
    return side if done else None


def _write_shard(path: Path, plan: list[Item], cache: MotionCache, advance) -> dict:
    """Write one shard (temp file, fsync, rename), then its sidecar; returns the sidecar.
    `advance(bytes)` is called once per video of the plan."""
    from webdataset.writer import TarWriter

    samples: list[dict] = []
    skipped: list[dict] = []
    # TarWriter with mtime 0: the same bytes every time
    with atomic_open(path, clear_stale=True) as f, TarWriter(f, user="", group="", mtime=0, encoder=False) as tar:
        for item in plan:
            try:
                members = _members(item, cache)
            except Unpackable as err:
                skipped.append({"key": item.key, "path": str(item.path), "kind": err.kind, "reason": str(err)})
                advance(0)
                continue
            tar.write({"__key__": f"{len(samples):06d}", **members})
            samples.append({"key": item.key, "label": item.label})
            advance(len(members["video"]) + len(members["flow"]))
    side = {
        "format": SHARD_FORMAT,
        "shard": path.name,
        "samples": samples,
        "skipped": skipped,
        "plan": _plan(plan),
        "cache": _cache_info(cache),
        "bytes": path.stat().st_size,
    }
    write_atomic(Path(sidecar_url(str(path))), (json.dumps(side) + "\n").encode())
    return side


def pack(
    items: list[Item],
    cache: MotionCache,
    out,
    shard_size: int,
    name: str,
    index: int = 0,
    count: int = 1,
    progress: bool = True,
    report_name: str = "report.json",
) -> PackReport:
    """Write share `index` of `count` of the shards of `items` to `out` as `name-%06d.tar` (+ sidecar).

    The videos are sorted by key; shard k holds videos k*shard_size .. (k+1)*shard_size - 1 and
    belongs to share k mod count. A shard an earlier run finished with the same videos and cache
    is kept as it is; a killed run leaves no partial shard. Videos not in the cache, or whose
    entry was made from another file, are skipped and reported. The report goes to
    `out/<name>-<report_name>`, even when interrupted.
    """
    from tqdm import tqdm

    items = sorted({item.key: item for item in items}.values(), key=lambda item: item.key)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = [
        (k, items[k * shard_size : (k + 1) * shard_size]) for k in range(index, -(-len(items) // shard_size), count)
    ]
    report = PackReport(VideoTally(sum(len(plan) for _, plan in plans)), shards=len(plans))
    bar = tqdm(total=report.videos.videos, unit="video", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    start = time.perf_counter()

    def advance(size: int) -> None:
        report.bytes += size
        bar.set_postfix_str(f"{report.bytes / 1e6 / max(time.perf_counter() - start, 1e-9):.0f} MB/s")
        bar.update()

    position = 0  # of a shard's first video in this share
    try:
        for k, plan in plans:
            path = out / f"{name}-{k:06d}.tar"
            side = _finished(path, plan, cache)
            if side is None:
                side = _write_shard(path, plan, cache, advance)
                report.written += 1
            else:
                report.kept += 1
                bar.update(len(plan))
            packed = {s["key"] for s in side["samples"]}
            skipped = {s["key"]: s for s in side["skipped"]}
            for j, item in enumerate(plan):
                if item.key in packed:
                    report.videos.mark_read(position + j)
                else:
                    entry = skipped.get(item.key, {"kind": "not_packed", "reason": "not in its shard"})
                    report.videos.skip(position + j, item.path, entry["kind"], entry["reason"], video=item.key)
                    bar.write(f"skipped {item.path}: {entry['reason']}", file=sys.stderr)
            report.samples += len(packed)
            position += len(plan)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        bar.close()
        report.seconds = round(time.perf_counter() - start, 3)
        write_atomic(out / f"{name}-{report_name}", (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    return report
