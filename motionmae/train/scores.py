"""Class scores of a classifier over a labelled list: softmax averaged over each video's views, and accuracy.

Videos that fail to read are skipped and counted (`VideoTally`); accuracies are over the videos
that were read. In a `torchrun` job every rank scores its share and the results are gathered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from motionmae.common.lists import Item, ListError
from motionmae.common.tally import VideoTally
from motionmae.data.datasets import ClipDataset
from motionmae.data.shards import ShardStream, single_pass_loader
from motionmae.models.vit import normalize_video
from motionmae.train.distributed import Distributed


@dataclass
class Scores:
    """Class probabilities of the videos that were read, averaged over their views."""

    probs: torch.Tensor  # float (N_read, C), in list order
    labels: torch.Tensor  # int64 (N_read,)
    videos: VideoTally  # read and skipped, with reasons


def labelled(items: list[Item], source) -> list[Item]:
    unlabelled = [i for i in items if i.label < 0]
    if unlabelled:
        raise ListError(
            f"{source}: {len(unlabelled)} of {len(items)} videos have no label "
            f"(first: {unlabelled[0].path}); evaluation needs `path label` lines"
        )
    return items


def check_labels(items: list[Item], num_classes: int, source) -> None:
    bad = [i for i in items if i.label >= num_classes]
    if bad:
        raise ListError(
            f"{source}: label {bad[0].label} of {bad[0].path} is out of range for a {num_classes}-class model"
        )


def accuracy(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Top-1 / top-5 (fractions), per-class top-1 and the confusion matrix (rows: true, columns: predicted)."""
    if len(labels) == 0:
        raise ListError("no video could be read, so there is no accuracy to report")
    top = probs.topk(min(5, probs.shape[1]), dim=1).indices
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    totals = confusion.sum(1)
    return {
        "top1": (top[:, 0] == labels).float().mean().item(),
        "top5": (top == labels[:, None]).any(1).float().mean().item(),
        "per_class": [confusion[c, c].item() / totals[c].item() if totals[c] else None for c in range(num_classes)],
        "confusion": confusion.tolist(),
    }


def _loader(dataset, batch_size: int, workers: int, env: Distributed):
    """Test-time loader over this rank's share of the videos."""
    return single_pass_loader(dataset, batch_size, workers, env.device.type == "cuda", env.rank, env.world)


def _gather(parts: list, env: Distributed) -> list:
    """Concatenate every rank's list (rank 0's first)."""
    if env.world == 1:
        return parts
    everything: list = [None] * env.world
    dist.all_gather_object(everything, parts)
    return [x for rank_parts in everything for x in rank_parts]


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: ClipDataset | ShardStream,
    env: Distributed,
    batch_size: int = 4,
    workers: int = 2,
    progress: bool = True,
    desc: str = "evaluate",
) -> Scores:
    """Softmax of `model` (video (B, 3, T, H, W) -> logits) averaged over the views of every video."""
    model.eval()
    use_amp = env.device.type == "cuda"
    results: list[tuple] = []  # (position, probs (C,), label) per video read
    videos = VideoTally(len(dataset))
    loader = _loader(dataset, batch_size, workers, env)
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not (progress and env.main), dynamic_ncols=True):
        videos.update(batch)
        ok = batch["ok"]
        frames = batch["frames"][ok]  # (B_ok, V, T, S, S, 3)
        if len(frames):
            video = normalize_video(frames.flatten(0, 1).to(env.device, non_blocking=True))
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(video)
            probs = logits.float().softmax(-1).view(len(frames), frames.shape[1], -1).mean(1).cpu()
            results += zip(batch["video"][ok].tolist(), probs, batch["label"][ok])
    read = sorted(_gather(results, env), key=lambda r: r[0])
    merged = VideoTally(len(dataset))
    for part in _gather([videos], env):
        merged.merge(part)
    num_classes = read[0][1].shape[0] if read else 0
    return Scores(
        torch.stack([r[1] for r in read]) if read else torch.zeros(0, num_classes),
        torch.stack([r[2] for r in read]) if read else torch.zeros(0, dtype=torch.int64),
        merged,
    )


def class_names(list_path, num_classes: int) -> list[str]:
    """Names from `classes.txt` beside the list (one a line), else `class i`."""
    path = Path(list_path)
    names_file = (path if path.is_dir() else path.parent) / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if len(names) == num_classes:
            return names
    return [f"class {i}" for i in range(num_classes)]
