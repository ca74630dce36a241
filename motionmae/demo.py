"""The demo: the main job end to end on the embedded synthetic data set, on a CPU in minutes.

    synthetic videos -> motion cache -> MME pretraining (ViT-micro) -> linear probe

Every stage resumes: a second run reuses the data, the cache entries and the
finished checkpoint, and only redoes what is missing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from motionmae.config import load_config
from motionmae.data.synthetic import CLASSES, make_dataset
from motionmae.figures.charts import metrics_figure, save_figure
from motionmae.io.cache import CacheParams, MotionCache
from motionmae.io.prepare import list_videos, prepare
from motionmae.motion.flow import FlowParams
from motionmae.train.pretrain import pretrain
from motionmae.train.probe import linear_probe

DEMO_DATA: dict[str, Any] = {"videos_per_class": 100, "size": 32, "frames": 24}  # 960 train / 240 val videos
PROBE = "linear-probe-demo"  # the probe's preset


def demo_cache_params(short_side: int, compensation: str = "none") -> CacheParams:
    """The demo's motion cache: flow kept at full resolution (stride 1), no camera compensation
    (`compensation` "flow" turns it on, for data with camera motion).

    The demo's camera is still, and at 32 px, with every object moving together, the camera
    homography fitted to the flow takes up part of their motion (docs/benchmarks.md).
    """
    return CacheParams(flow=FlowParams(compensation=compensation), short_side=short_side, stride=1)


def run_demo(
    config_name: str = "demo", overrides: Sequence[str] = (), workers: int | None = None, seed: int = 0
) -> dict:
    """Run the demo; returns the linear-probe results, the seconds of each stage and the paths it wrote.

    `seed`: the synthetic data set's seed; another seed puts data, cache and run beside the
    default ones with a `-seed<N>` suffix (data/synthetic-seed1, cache/demo-seed1, runs/demo-seed1).
    """
    workers = workers or os.cpu_count() or 1
    config = load_config(config_name, overrides)
    if seed:  # another data set: its own folders beside the default ones
        d = config.data
        for split in ("train", "val"):
            path = Path(getattr(d, split))
            setattr(d, split, str(path.parent.with_name(f"{path.parent.name}-seed{seed}") / path.name))
        d.cache, config.run.out = f"{d.cache}-seed{seed}", f"{config.run.out}-seed{seed}"
    train, val = Path(config.data.train), Path(config.data.val)
    seconds = {}

    started = time.perf_counter()
    print(f"[1/4] synthetic data set in {train.parent} (12 classes defined only by motion)")
    make_dataset(train.parent, **DEMO_DATA, seed=seed, workers=workers)
    seconds["data"] = time.perf_counter() - started

    started = time.perf_counter()
    cache = MotionCache(config.data.cache, demo_cache_params(config.data.short_side))
    print(f"[2/4] motion cache in {cache.dir} (optical flow)")
    report = prepare(list_videos(train) + list_videos(val), cache, workers=workers)
    if report.failed:
        print(f"      {len(report.failed)} video(s) failed; see {cache.dir / 'report.json'}")
    config.data.cache = str(cache.dir)
    seconds["cache"] = time.perf_counter() - started

    started = time.perf_counter()
    print(f"[3/4] MME pretraining, ViT-{config.model.size}, {config.optim.epochs} epochs -> {config.run.out}")
    result = pretrain(config, resume="auto")
    seconds["pretrain"] = time.perf_counter() - started

    started = time.perf_counter()
    print("[4/4] linear probe of the frozen encoder")
    probe = linear_probe(
        result.checkpoint,
        load_config(PROBE, [f"data.train={train}", f"data.val={val}", f"data.workers={min(workers, 2)}"]),
    )
    seconds["probe"] = time.perf_counter() - started
    run = Path(config.run.out)
    figure = save_figure(run / "training.png", metrics_figure(run / "metrics.jsonl"))
    summary = {
        "top1": probe["top1"],
        "top5": probe["top5"],
        "chance": 1 / len(CLASSES),
        "seconds": seconds,
        "checkpoint": str(result.checkpoint),
        "metrics": str(run / "metrics.jsonl"),
        "figure": str(figure),
    }
    (run / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
