"""The pretraining loop on real synthetic videos: losses fall, resume is exact, DDP matches one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motionmae.config import ConfigError, load_config
from motionmae.models import checkpoints
from motionmae.models.interop import model_from_checkpoint
from motionmae.train.engine import TrainingDiverged
from motionmae.train.optim import param_groups
from motionmae.train.pretrain import pretrain


def overrides(tiny_synthetic, out, *extra):
    data, cache = tiny_synthetic
    return [
        f"data.train={data / 'train.csv'}",
        f"data.cache={cache}",
        f"run.out={out}",
        "data.short_side=64",
        "data.frames=8",
        "data.stride=2",
        "data.workers=0",
        "optim.batch_size=4",
        "optim.epochs=4",
        "optim.warmup_epochs=1",
        "optim.base_lr=1e-3",
        "run.log_every=1",
        "run.checkpoint_every=1000",
        *extra,
    ]


def records(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def losses(out) -> list[float]:
    return [r["loss"] for r in records(out) if "loss" in r]


def test_pretrain_writes_a_complete_checkpoint_and_learns(tiny_synthetic, tmp_path):
    torch.set_num_threads(1)
    result = pretrain(load_config("demo", overrides(tiny_synthetic, tmp_path, "run.max_steps=24")))
    state = checkpoints.load(result.checkpoint)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "step", "epoch", "config", "target"} <= set(state)
    assert state["step"] == 24 and state["target"] == {"name": "traj", "dim": 8}  # the demo's: K=1, L=4, dx, dy
    curve = losses(tmp_path)
    assert len(curve) == 24
    assert sum(curve[-4:]) / 4 < sum(curve[:4]) / 4  # the loss falls
    assert (tmp_path / "config.yaml").is_file()


def test_resume_continues_exactly(tiny_synthetic, tmp_path):
    torch.set_num_threads(1)
    whole, split = tmp_path / "whole", tmp_path / "split"
    uninterrupted = pretrain(load_config("demo", overrides(tiny_synthetic, whole, "run.max_steps=6")))
    pretrain(load_config("demo", overrides(tiny_synthetic, split, "run.max_steps=3")))
    resumed = pretrain(load_config("demo", overrides(tiny_synthetic, split, "run.max_steps=6")), resume="auto")
    assert losses(split) == losses(whole)  # bitwise equal on CPU
    counts = resumed.videos.to_dict()  # the checkpoint carries the videos read before the interruption
    assert counts == uninterrupted.videos.to_dict() and (counts["read"], counts["skipped"]) == (24, 0)  # 6 x 4


def test_repeated_sampling_trains_on_clips_of_half_the_videos_and_the_log_times_the_data_wait(tiny_synthetic, tmp_path):
    torch.set_num_threads(1)
    result = pretrain(load_config("demo", overrides(tiny_synthetic, tmp_path, "run.max_steps=3", "data.repeats=2")))
    logged = [r for r in records(tmp_path) if "loss" in r]
    assert len(logged) == 3 and all(0 <= r["data_wait_s"] <= r["step_s"] for r in logged)
    assert result.videos.to_dict()["read"] == 6  # batches of 4 clips: 2 videos x 2 clips, 3 steps
    with pytest.raises(ConfigError, match="optim.batch_size 4 is not a multiple of data.repeats 3"):
        pretrain(load_config("demo", overrides(tiny_synthetic, tmp_path / "bad", "data.repeats=3")))


@pytest.mark.slow  # torch.compile
def test_compiled_model_trains_like_the_eager_one(tiny_synthetic, tmp_path):
    torch.set_num_threads(1)
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    pretrain(load_config("demo", overrides(tiny_synthetic, eager, "run.max_steps=3")))
    result = pretrain(load_config("demo", overrides(tiny_synthetic, compiled, "run.max_steps=3", "run.compile=true")))
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-3)
    assert not any(key.startswith("_orig_mod") for key in checkpoints.load(result.checkpoint)["model"])


@pytest.mark.slow  # spawned loader workers
def test_resume_across_an_epoch_boundary_with_workers(tiny_synthetic, tmp_path):
    torch.set_num_threads(1)
    # 36 training videos / batch 4 = 9 steps per epoch; stop inside epoch 1
    whole, split = tmp_path / "whole", tmp_path / "split"
    extra = ("data.workers=2", "optim.accum_steps=2")
    pretrain(load_config("demo", overrides(tiny_synthetic, whole, "run.max_steps=6", *extra)))
    pretrain(load_config("demo", overrides(tiny_synthetic, split, "run.max_steps=5", *extra)))
    pretrain(load_config("demo", overrides(tiny_synthetic, split, "run.max_steps=6", *extra)), resume="auto")
    assert losses(split) == losses(whole)


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(tiny_synthetic, tmp_path):
    torch.set_num_threads(1)
    config = load_config(
        "demo",
        overrides(
            tiny_synthetic,
            tmp_path,
            "optim.base_lr=1e30",
            "optim.warmup_epochs=0",
            "run.checkpoint_every=1",
            "run.max_steps=20",
        ),
    )
    with pytest.raises(TrainingDiverged, match="last good checkpoint kept"):
        pretrain(config)
    state = checkpoints.load(tmp_path / "checkpoint.pt")
    assert 1 <= state["step"] < 20
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_no_weight_decay_on_norms_biases_and_tokens():
    from motionmae.models.vit import PretrainModel

    model = PretrainModel(264, size="tiny", frames=4, img_size=32, decoder_depth=1)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert "mask_token" in skipped and "encoder.blocks.0.attn.q_bias" in skipped
    assert "encoder.blocks.0.norm1.weight" in skipped and "decoder.head.bias" in skipped
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.05


@pytest.mark.slow  # DDP
def test_ddp_two_processes_match_one_process(tiny_synthetic, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    two.mkdir()
    torch.set_num_threads(1)
    pretrain(load_config("demo", overrides(tiny_synthetic, one, "run.max_steps=4")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("ddp_pretrain.py")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            str(two),
            *overrides(tiny_synthetic, two, "run.max_steps=4", "optim.batch_size=2"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(two / "params-rank0.pt")
    rank1 = torch.load(two / "params-rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert len(losses(two)) == 4  # rank 0 logs alone
    assert losses(two) == pytest.approx(losses(one), rel=2e-2)


@pytest.mark.parametrize("preset", ["videomae", "maskfeat", "mgm", "mme-mgm", "mme-release-k400"])
def test_every_method_preset_trains(preset, tiny_synthetic, tmp_path):
    """Each method's target and mask run through the real loop (model shrunk to the demo's size)."""
    torch.set_num_threads(1)
    config = load_config(
        preset,
        overrides(
            tiny_synthetic,
            tmp_path,
            "run.max_steps=2",
            "model.size=tiny",
            "data.size=64",
            "data.short_side=64",
            "data.scales=[1.0]",
        ),
    )
    result = pretrain(config)
    state = checkpoints.load(result.checkpoint)
    assert state["target"]["name"] == config.target.name and len(losses(tmp_path)) == 2
    assert all(loss == loss and loss < 1e3 for loss in losses(tmp_path))
    model, _ = model_from_checkpoint(result.checkpoint)  # what `convert` and fine-tuning read
    assert torch.equal(
        model.state_dict()[
            "patch_embed.proj.weight" if preset == "mme-release-k400" else "encoder.patch_embed.proj.weight"
        ],
        result.model.encoder.patch_embed.proj.weight,
    )
