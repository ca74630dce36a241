"""`motionmae bench quality`: the real benchmark loop on a tiny budget, resuming, failures, the claims."""

import dataclasses
import json
from pathlib import Path

import pytest

from bench.quality import METHODS, Budget, QualityError, check_claims, pretrain_config, run_quality
from bench.timing import in_fresh_process

TINY = Budget(
    {"videos_per_class": 2, "size": 64, "frames": 24},
    pretrain_epochs=1,
    pretrain_warmup=0,
    batch=4,
    probe_epochs=2,
    finetune_epochs=1,
    finetune_warmup=0,
    overrides=("data.frames=8", "data.workers=0"),
)


def quality(*args) -> dict:
    """`run_quality(TINY, *args)` in a spawned interpreter: it decodes and encodes video, and a
    later fork of this process (the data fixtures' worker pools) could inherit PyAV's threads and hang."""
    return in_fresh_process(run_quality, TINY, *args)


@pytest.mark.slow  # the quality benchmark, end to end
def test_tiny_budget_runs_reports_and_a_rerun_skips_finished_runs(tmp_path, capfd):
    out = tmp_path / "bench"
    methods = ["mme", "pixel-shuffled"]
    report = quality(1, out, methods, 1)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["seed"]) for r in lines] == [("mme", 0), ("pixel-shuffled", 0)]
    for r in lines:
        assert 0 <= r["probe_top1"] <= 1 and 0 <= r["finetune_top1"] <= 1 and r["pretrain_steps"] == 3
    assert (out / "quality.png").stat().st_size > 0 and json.loads((out / "quality.json").read_text()) == report
    table = (out / "quality.md").read_text()
    assert "| mme | traj, tube 0.7 |" in table and "| pixel-shuffled | pixel, tube 0.9, shuffled frames |" in table
    assert "| MME beats pixel (VideoMAE) by at least 10 points | no result for videomae | not evaluated |" in table
    printed = capfd.readouterr().out
    assert "[1/2] mme seed 0: probe" in printed and "ETA" in printed and table in printed

    # Rerun with a second seed, one of whose runs finds a damaged checkpoint: the finished runs
    # are not redone, the failure is one line, the other run goes on, the report still comes out.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/checkpoint.pt")}
    damaged = out / "runs" / "mme-s1" / "pretrain" / "checkpoint.pt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")
    report = quality(2, out, methods, 1)
    printed = capfd.readouterr().out
    assert "2 already done" in printed and "[4/4] pixel-shuffled seed 1: probe" in printed
    assert f"[3/4] mme seed 1 failed: CheckpointError: {damaged}: not a readable checkpoint" in printed
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert [(r["method"], r["seed"]) for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())] == [
        ("mme", 0),
        ("pixel-shuffled", 0),
        ("pixel-shuffled", 1),
    ]
    assert [(f["method"], f["seed"]) for f in report["failed"]] == [("mme", 1)]
    assert "CheckpointError" in (out / "runs" / "mme-s1" / "error.txt").read_text()
    assert "- mme seed 1: CheckpointError" in (out / "quality.md").read_text()
    assert report["methods"]["pixel-shuffled"]["seeds"] == 2 and report["methods"]["mme"]["seeds"] == 1

    with pytest.raises(QualityError, match="another budget"):
        run_quality(dataclasses.replace(TINY, pretrain_epochs=2), seeds=1, out=out, methods=["mme"])
    with pytest.raises(QualityError, match="unknown method"):
        run_quality(TINY, out=out, methods=["mme", "nonsense"])


def stats(*values):
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
    return {"probe_top1": {"mean": mean, "std": std, "values": list(values)}}


def test_claims_are_judged_from_the_probe_means():
    summary = {
        "videomae": stats(0.20, 0.22),
        "mme": stats(0.35, 0.33),
        "mgm": stats(0.25),
        "pixel-tube-0.75": stats(0.26),
        "mme-mgm": stats(0.30),
        "pixel-shuffled": stats(0.20),
        "mme-shuffled": stats(0.21),
    }
    claims = {c["claim"]: c for c in check_claims(summary)}
    mme = claims["MME beats pixel (VideoMAE) by at least 10 points"]
    assert mme["met"] is True and mme["measured"] == "MME 34.0 ± 1.4 vs VideoMAE 21.0 ± 1.4: +13.0 points"
    assert claims["MGM beats random tube at the same ratio (0.75)"]["met"] is False
    best = claims["MME+MGM is best"]
    assert best["met"] is False and "the best other, mme 34.0" in best["measured"]
    shuffle = claims["shuffling costs MME more than pixel"]
    assert shuffle["met"] is True and shuffle["measured"] == "MME loses +13.0 points, pixel (VideoMAE) +1.0"

    claims = {c["claim"]: c for c in check_claims({"mme-mgm": stats(0.3)})}
    assert claims["MME+MGM is best"]["met"] is None
    assert claims["MME beats pixel (VideoMAE) by at least 10 points"]["measured"] == "no result for mme, videomae"


def config_of(name: str, seed: int = 0):
    return pretrain_config(name, seed, TINY, Path("data"), Path("cache"), Path("out"))


def test_every_method_builds_its_config_from_the_base_and_its_preset():
    for name in METHODS:
        config = config_of(name, seed=1)
        assert config.optim.batch_size == 4 and config.run.seed == 1 and config.data.frames == 8
        assert config.model.size == "micro" and config.data.train == "data/train.csv"
    mme = config_of("mme-no-shape")
    assert (mme.target.name, mme.target.options, mme.mask.kind, mme.mask.ratio) == (
        "traj",
        {"shape": False},
        "tube",
        0.7,
    )
    pixel = config_of("pixel-shuffled")
    assert pixel.data.shuffle_frames and pixel.model.decoder_depth == 4 and pixel.mask.ratio == 0.9
    assert not config_of("mme").data.shuffle_frames


def test_cli_methods_subset_reaches_the_benchmark(tmp_path, capsys):
    """`--methods` is split on commas and checked by run_quality: an unknown name is one line, exit 2."""
    from motionmae.cli.main import main

    assert main(["bench", "quality", "--methods", "mme,nonsense", "--seeds", "1", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("motionmae bench: error: unknown method(s) nonsense (known: videomae, maskfeat,"), error
    assert "\n" not in error and not (tmp_path / "budget.json").exists()
