"""The demo: the main job end to end on the embedded synthetic data set, on a CPU in minutes.

    synthetic videos -> motion cache -> MME pretraining (ViT-tiny) -> linear probe

Every stage resumes: a second run reuses the data, the cache entries and the
finished checkpoint, and only redoes what is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from motionmae.cache import MotionCache, list_videos, prepare
from motionmae.config import load_config
from motionmae.data import open_cache
from motionmae.evaluate import linear_probe
from motionmae.pretrain import pretrain
from motionmae.synthetic import CLASSES, make_dataset
from motionmae.visualize import metrics_figure, save_png


def run_demo(config_name: str = "demo", overrides: list[str] = (), workers: int | None = None) -> dict:
    """Run the demo; returns the linear-probe results plus the paths it wrote."""
    workers = workers or os.cpu_count() or 1
    config = load_config(config_name, overrides)
    train, val = Path(config.data.train), Path(config.data.val)

    print(f"[1/4] synthetic data set in {train.parent} (12 classes defined only by motion)")
    make_dataset(train.parent, workers=workers)

    print(f"[2/4] motion cache in {config.data.cache} (camera-compensated optical flow)")
    cache: MotionCache = open_cache(config.data)
    report = prepare(list_videos(train) + list_videos(val), cache, workers=workers)
    if report.failed:
        print(f"      {len(report.failed)} video(s) failed; see {cache.dir / 'report.json'}")

    print(f"[3/4] MME pretraining, ViT-{config.model.size}, {config.optim.epochs} epochs -> {config.run.out}")
    result = pretrain(config, resume="auto")

    print("[4/4] linear probe of the frozen encoder")
    probe = linear_probe(result.checkpoint, train, val, workers=min(workers, 2))
    run = Path(config.run.out)
    figure = save_png(run / "training.png", metrics_figure(run / "metrics.jsonl"))
    summary = {
        "top1": probe["top1"], "top5": probe["top5"], "chance": 1 / len(CLASSES),
        "checkpoint": str(result.checkpoint), "metrics": str(run / "metrics.jsonl"), "figure": str(figure),
    }
    (run / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
