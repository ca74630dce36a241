"""Multi-view test of a fine-tuned checkpoint.

    evaluate("runs/finetune-demo/checkpoint.pt", "data/synthetic/val.csv", clips=5, crops=3)

`clips x crops` views per video, softmax averaged over the views; top-1, top-5, per-class
accuracy, confusion matrix. Videos that fail to read are skipped and counted; accuracies
are over the videos that were read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from motionmae.data.datasets import ClipSpec
from motionmae.data.shards import clip_dataset, read_items
from motionmae.figures.charts import confusion_figure, save_figure
from motionmae.train.distributed import setup_distributed
from motionmae.train.finetune import load_classifier
from motionmae.train.scores import accuracy, check_labels, class_names, labelled, predict


def evaluate(checkpoint, val_list, clips: int | None = None, crops: int | None = None, out=None,
             batch_size: int = 4, device: str = "auto", workers: int = 2, progress: bool = True) -> dict:
    """Multi-view test of a fine-tuned checkpoint; returns (and writes to OUT/evaluate.json) the results
    and draws OUT/confusion.png. `clips` / `crops` default to the checkpoint's config; `out` to
    `<checkpoint folder>/evaluate`. Result keys: top1, top5, per_class, confusion, views, clips, crops,
    videos (`VideoTally.to_dict()`: read and skipped, with reasons), class_names, checkpoint, figure."""
    checkpoint = Path(checkpoint)
    out = Path(out) if out else checkpoint.parent / "evaluate"
    model, config = load_classifier(checkpoint)
    d = config.data
    clips, crops = clips or d.test_clips, crops or d.test_crops
    items = labelled(read_items(val_list), val_list)
    num_classes = model.head.out_features
    check_labels(items, num_classes, val_list)
    env = setup_distributed(device)
    dataset = clip_dataset(items, ClipSpec(d.frames, d.sampling, d.stride, d.size, d.short_side),
                           clips=clips, crops=crops)
    scores = predict(model.to(env.device), dataset, env, batch_size, workers, progress)
    report = accuracy(scores.probs, scores.labels, num_classes)
    names = class_names(val_list, num_classes)
    report.update({"views": clips * crops, "clips": clips, "crops": crops, "videos": scores.videos.to_dict(),
                   "class_names": names, "checkpoint": str(checkpoint), "figure": str(out / "confusion.png")})
    if env.main:
        title = (f"{checkpoint.parent.name}: top-1 {report['top1']:.1%}, top-5 {report['top5']:.1%} "
                 f"({len(scores.labels)} videos, {clips}x{crops} views)")
        save_figure(out / "confusion.png", confusion_figure(np.array(report["confusion"]), names, title))
        (out / "evaluate.json").write_text(json.dumps(report, indent=1))
    return report
