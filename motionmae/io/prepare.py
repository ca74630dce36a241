"""`prepare`: fill the motion cache for a list of videos, in worker processes, skipping and reporting bad files.

    report = prepare(list_videos("data/synthetic/train.csv"), MotionCache("cache/motion"), workers=8)

Each worker decodes a video and writes its entry (`MotionCache.extract`: flow, camera
compensation, shot cuts). Finished entries survive an interruption and are not computed
again; `shard` splits a list between machines. The report (`PrepareReport`) goes to
`ROOT/flow-<key>/report[-i-of-n].json`.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from motionmae.common.files import write_atomic
from motionmae.common.lists import read_list
from motionmae.common.tally import VideoTally, skip_kind
from motionmae.io.cache import MotionCache
from motionmae.io.video import VideoError


def list_videos(source) -> list[tuple[str, Path]]:
    """`(key, path)` of the videos of a list file, folder or video file (`common.lists.read_list`), sorted by key."""
    return sorted({item.key: item.path for item in read_list(source)}.items())


def shard(videos: list, index: int, count: int) -> list:
    """Every `count`-th video starting at `index` (0-based): n machines split one list."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
    return videos[index::count]


@dataclass
class PrepareReport:
    """What a `prepare` run did; written as JSON into the cache folder: the shared video counts
    (`tally.VideoTally`: read = in the cache now, skipped with reasons) plus the fields below."""

    videos: VideoTally  # over this shard's list
    cached: int = 0  # already in the cache, not extracted again
    done: int = 0  # extracted by this run
    frames: int = 0  # frames extracted by this run
    seconds: float = 0.0
    interrupted: bool = False
    notes: list = field(default_factory=list)  # {"video", "path", "note"}: stored, but not as the container says

    @property
    def failed(self) -> list[dict]:
        """{"video", "path", "kind", "reason"} of every video skipped."""
        return self.videos.to_dict()["skipped_videos"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def to_dict(self) -> dict:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "videos"}
        return {**self.videos.to_dict(), **fields}


_worker_cache: MotionCache  # set by _init_worker in each worker process


def _init_worker(root, params) -> None:
    global _worker_cache
    cv2.setNumThreads(1)
    _worker_cache = MotionCache(root, params)


def _extract_job(job: tuple[int, str, str]) -> tuple[int, int, str | None, tuple[str, str] | None]:
    """Run in a worker: (position, frames, note or None, failure (kind, reason) or None)."""
    position, video, path = job
    try:
        return position, *_worker_cache.extract(video, path), None
    except VideoError as err:
        return position, 0, None, (skip_kind(err), err.problem)
    except Exception as err:  # one bad file must not stop a batch over a real-world collection
        return position, 0, None, (skip_kind(err), f"{err.__class__.__name__}: {err}")


def prepare(
    videos: list[tuple[str, Path]],
    cache: MotionCache,
    workers: int = 1,
    progress: bool = True,
    report_name: str = "report.json",
) -> PrepareReport:
    """Extract every video not yet in `cache`; skip and report the ones that fail.

    `videos` are `(key, path)` pairs (see `list_videos` and `shard`). Finished
    entries survive an interruption and are not recomputed by the next run.
    The report is written to `cache.dir / report_name` even when interrupted.
    """
    from tqdm import tqdm

    cache.write_params()
    report = PrepareReport(VideoTally(len(videos)))
    todo = []
    for position, (key, path) in enumerate(videos):
        if cache.has(key, path):
            report.videos.mark_read(position)
        else:
            todo.append((position, key, str(path)))
    report.cached = len(videos) - len(todo)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    # spawned, not forked: a forked worker inherits the parent's FFmpeg state and can hang
    workers = min(workers, len(todo))
    pool = (
        multiprocessing.get_context("spawn").Pool(workers, _init_worker, (cache.root, cache.params))
        if workers > 1
        else None
    )
    if pool is None:
        _init_worker(cache.root, cache.params)
    try:
        results = pool.imap_unordered(_extract_job, todo) if pool else map(_extract_job, todo)
        for position, frames, note, failure in results:
            video, path = videos[position]
            if failure is None:
                report.done += 1
                report.frames += frames
                report.videos.mark_read(position)
                cache._infos.pop(video, None)  # written by a worker: re-read the new header when asked
                if note:
                    report.notes.append({"video": video, "path": str(path), "note": note})
            else:
                report.videos.skip(position, path, *failure, video=video)
                bar.write(f"skipped {path}: {failure[1]}", file=sys.stderr)
            elapsed = time.perf_counter() - start
            failed = len(report.videos.skipped)
            bar.set_postfix_str(f"{report.frames / max(elapsed, 1e-9):.0f} frames/s, {failed} failed")
            bar.update()
        if pool:
            pool.close()
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        if pool:
            pool.terminate()
            pool.join()
        bar.close()
        report.seconds = round(time.perf_counter() - start, 3)
        write_atomic(cache.dir / report_name, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    return report
