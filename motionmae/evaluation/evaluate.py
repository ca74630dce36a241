"""Multi-view test of a fine-tuned checkpoint.

    evaluate("runs/finetune-demo/checkpoint.pt", load_config(None, ["data.clips=5", "data.crops=3"], task="evaluate"))

`clips x crops` views per video, softmax averaged over the views; top-1, top-5, per-class
accuracy, confusion matrix. Videos that fail to read are skipped and counted; accuracies
are over the videos that were read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from motionmae.config import EvaluateConfig
from motionmae.data.datasets import ClipSpec
from motionmae.data.shards import clip_dataset, read_items
from motionmae.figures.charts import confusion_figure, save_figure
from motionmae.train.distributed import setup_distributed
from motionmae.train.finetune import load_classifier
from motionmae.train.scores import accuracy, check_labels, class_names, labelled, predict


def evaluate(checkpoint, config: EvaluateConfig | None = None, progress: bool = True) -> dict:
    """Multi-view test of a fine-tuned checkpoint per `config` (`task: evaluate`; its defaults when None);
    returns (and writes to OUT/evaluate.json) the results and draws OUT/confusion.png. data.clips /
    data.crops default to the checkpoint's config; run.out to `<checkpoint folder>/evaluate`. Result keys:
    top1, top5, per_class, confusion, views, clips, crops, videos (`VideoTally.to_dict()`: read and
    skipped, with reasons), class_names, checkpoint, figure."""
    config = config or EvaluateConfig()
    val_list = config.data.val
    checkpoint = Path(checkpoint)
    out = Path(config.run.out) if config.run.out else checkpoint.parent / "evaluate"
    model, trained = load_classifier(checkpoint)
    d = trained.data
    clips, crops = config.data.clips or d.test_clips, config.data.crops or d.test_crops
    items = labelled(read_items(val_list), val_list)
    num_classes = model.head.out_features
    check_labels(items, num_classes, val_list)
    env = setup_distributed(config.run.device)
    dataset = clip_dataset(
        items, ClipSpec(d.frames, d.sampling, d.stride, d.size, d.short_side), clips=clips, crops=crops
    )
    scores = predict(model.to(env.device), dataset, env, config.data.batch_size, config.data.workers, progress)
    report = accuracy(scores.probs, scores.labels, num_classes)
    names = class_names(val_list, num_classes)
    report.update(
        {
            "views": clips * crops,
            "clips": clips,
            "crops": crops,
            "videos": scores.videos.to_dict(),
            "class_names": names,
            "checkpoint": str(checkpoint),
            "figure": str(out / "confusion.png"),
        }
    )
    if env.main:
        title = (
            f"{checkpoint.parent.name}: top-1 {report['top1']:.1%}, top-5 {report['top5']:.1%} "
            f"({len(scores.labels)} videos, {clips}x{crops} views)"
        )
        save_figure(out / "confusion.png", confusion_figure(np.array(report["confusion"]), names, title))
        (out / "evaluate.json").write_text(json.dumps(report, indent=1))
    return report
