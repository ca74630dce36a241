"""The training engine's resume semantics (`motionmae.train.engine`), once for every task: an interrupted
run, resumed from its latest checkpoint and then from the previous one when the latest is damaged,
trains exactly as an uninterrupted one, loss scaler, generators and sampler position included."""

import json
import logging
from pathlib import Path

import pytest
import torch

from motionmae.config import load_config
from motionmae.models import checkpoints
from motionmae.train.pretrain import pretrain


def config(tiny_synthetic, out, steps: int, *extra):
    """Pretraining on the tiny set with everything a resume must restore in play: 36 videos in batches of 4,
    2 micro-batches a step (3 steps an epoch), fp16 with loss scaling, drop path (random forward passes)."""
    data, cache = tiny_synthetic
    return load_config(
        "demo",
        [
            f"data.train={data / 'train.csv'}",
            f"data.cache={cache}",
            f"run.out={out}",
            "data.short_side=64",
            "data.frames=8",
            "data.stride=2",
            "data.workers=0",
            "optim.batch_size=4",
            "optim.accum_steps=2",
            "optim.epochs=4",
            "optim.warmup_epochs=1",
            "optim.base_lr=1e-3",
            "model.drop_path=0.2",
            "run.amp_dtype=float16",
            "run.log_every=1",
            "run.log_samples=true",
            f"run.max_steps={steps}",
            *extra,
        ],
    )


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps_logged(out: Path) -> list[dict]:
    """metrics.jsonl's per-step records without their timings."""
    return [
        {k: v for k, v in r.items() if k not in ("clips_per_s", "data_wait_s", "step_s")}
        for r in read_lines(out / "metrics.jsonl")
        if "loss" in r
    ]


def test_resume_continues_exactly_and_falls_back_to_the_previous_checkpoint(tiny_synthetic, tmp_path, caplog):
    torch.set_num_threads(1)
    whole, split = tmp_path / "whole", tmp_path / "split"
    uninterrupted = pretrain(config(tiny_synthetic, whole, 7))
    pretrain(config(tiny_synthetic, split, 2, "run.checkpoint_every=1"))  # stops inside epoch 0
    latest, previous = split / "checkpoint.pt", split / "checkpoint.prev.pt"
    assert (checkpoints.load(latest)["step"], checkpoints.load(previous)["step"]) == (2, 1)

    pretrain(config(tiny_synthetic, split, 5, "run.checkpoint_every=1"), resume="auto")  # across epoch 0's end
    latest.write_bytes(latest.read_bytes()[:1000])  # the latest (step 5) cut short, as by a full disk: resume
    with caplog.at_level(logging.WARNING, logger="motionmae.train.engine"):
        resumed = pretrain(config(tiny_synthetic, split, 7, "run.checkpoint_every=1"), resume="auto")  # at 4
    [warning] = [r.getMessage() for r in caplog.records if r.name == "motionmae.train.engine"]
    assert f"{latest}: not a readable checkpoint" in warning and warning.endswith(f"previous checkpoint, {previous}")
    assert "\n" not in warning

    assert steps_logged(split) == steps_logged(whole)  # losses bit for bit, lr, epochs, per step 1..7
    assert [r["step"] for r in steps_logged(split)] == list(range(1, 8))
    assert read_lines(split / "samples-rank0.jsonl") == read_lines(whole / "samples-rank0.jsonl")  # same videos
    end, reference = checkpoints.load(resumed.checkpoint), checkpoints.load(uninterrupted.checkpoint)
    assert (end["step"], end["epoch"], checkpoints.load(previous)["step"]) == (7, 7 / 3, 6)
    assert end["scaler"] == reference["scaler"] and end["scaler"]["_growth_tracker"] > 0  # scaling was on
    rng, reference_rng = end["rng"][0], reference["rng"][0]  # the generators after step 7
    assert torch.equal(rng["torch"], reference_rng["torch"]) and rng["numpy"] == reference_rng["numpy"]
    assert rng["python"] == reference_rng["python"]
    assert all(torch.equal(v, reference["model"][k]) for k, v in end["model"].items())
    assert resumed.videos.to_dict() == uninterrupted.videos.to_dict()


def test_the_logged_loss_is_the_mean_over_the_steps_micro_batches(tiny_synthetic, tmp_path):
    """A first step of 2 micro-batches of 4 clips logs the loss of one batch of the same 8 clips:
    the same model, clips and masks, so the mean over micro-batches, not the last one's."""
    torch.set_num_threads(1)
    exact = ("model.drop_path=0", "run.amp=false")
    accumulated, whole = tmp_path / "accumulated", tmp_path / "whole"
    pretrain(config(tiny_synthetic, accumulated, 1, *exact))
    pretrain(config(tiny_synthetic, whole, 1, *exact, "optim.batch_size=8", "optim.accum_steps=1"))
    videos = [
        [v for line in read_lines(out / "samples-rank0.jsonl") for v in line["videos"]] for out in (accumulated, whole)
    ]
    assert videos[0] == videos[1] and len(videos[0]) == 8
    [step], [reference] = steps_logged(accumulated), steps_logged(whole)
    assert step["loss"] == pytest.approx(reference["loss"], rel=1e-5) and step["position"] == pytest.approx(
        reference["position"], rel=1e-5
    )
