"""The timing helpers every benchmark uses: the machine it ran on, thread counts, repeated timings, reports.

Figures from a shared machine vary with its load: compare sides measured in one run
(ratios), and print `machine_line()` with them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import multiprocessing
import os
import platform
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import cv2
import torch

from motionmae.common.files import write_atomic


def machine() -> dict:
    """Platform, CPU count, load average and library versions of this process."""
    info = {
        "platform": platform.platform(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "load": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cv2": cv2.__version__,
        "av": av.__version__,
    }
    if importlib.util.find_spec("transformers") is not None:
        from importlib.metadata import version

        info["transformers"] = version("transformers")
    return info


def machine_line(info: dict | None = None) -> str:
    """`machine()` as one line."""
    info = info or machine()
    return (
        f"{info['platform']} | {info['arch']} | {info['cpus']} CPUs | load {info['load']} | python "
        f"{info['python']} | "
        + " | ".join(f"{k} {info[k]}" for k in ("torch", "cv2", "av", "transformers") if k in info)
    )


@contextlib.contextmanager
def threads(count: int):
    """Run the block with `count` torch and OpenCV threads, then restore the previous counts."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def best_seconds(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls of `fn`, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_seconds(fn, repeats: int, clock=time.perf_counter) -> float:
    """Median time of `repeats` calls of `fn` after one warm-up call, seconds of `clock`."""
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def in_fresh_process(fn, *args):
    """`fn(*args)` in a newly spawned interpreter: its own imports, threads and peak memory."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def peak_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_report(out, name: str, report: dict) -> Path:
    """Write `report` as `out`/`name` JSON, atomically (temp file + rename); returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / name, (json.dumps(report, indent=2) + "\n").encode())
    return out / name
