"""`motionmae bench quality`: the real benchmark loop on a tiny budget, resuming, failures, the claims."""

import dataclasses
import json
from pathlib import Path

import pytest

from bench import quality
from bench.quality import METHODS, Budget, QualityError, check_claims, pretrain_config, run_quality
from bench.timing import in_fresh_process
from motionmae.config import load_config

TINY = Budget(
    {"videos_per_class": 2, "size": 32, "frames": 24},
    pretrain_epochs=4,
    pretrain_warmup=0,
    batch=4,
    probe_epochs=2,
    finetune_epochs=1,
    finetune_warmup=0,
    finetuned=("mme", "scratch"),
)


def run_tiny(*args) -> dict:
    """`run_quality(TINY, *args)` in a spawned interpreter: it decodes and encodes video, and a
    later fork of this process (the data fixtures' worker pools) could inherit PyAV's threads and hang."""
    return in_fresh_process(run_quality, TINY, *args)


def result_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow  # the quality benchmark, end to end
def test_tiny_budget_runs_reports_and_a_rerun_skips_finished_runs(tmp_path, capfd):
    out = tmp_path / "bench"
    methods = ["mme", "pixel-shuffled", "scratch"]
    report = run_tiny(1, out, methods, 1, 2)  # two runs at a time
    lines = sorted(result_lines(out), key=lambda r: methods.index(r["method"]))
    assert [(r["method"], r["seed"]) for r in lines] == [("mme", 0), ("pixel-shuffled", 0), ("scratch", 0)]
    mme, shuffled, scratch = lines
    assert all(0 <= r["probe_top1"] <= 1 for r in lines)
    # 4 epochs of 12 training videos at batch 4; scratch is not pretrained; only mme and scratch are fine-tuned
    assert (mme["pretrain_steps"], shuffled["pretrain_steps"], scratch["pretrain_steps"]) == (12, 12, 0)
    assert 0 <= mme["finetune_top1"] <= 1 and 0 <= scratch["finetune_top1"] <= 1 and shuffled["finetune_top1"] is None
    assert not (out / "runs" / "pixel-shuffled-s0" / "finetune").exists()
    assert (out / "runs" / "scratch-s0" / "pretrain" / "checkpoint.pt").is_file()  # the initialized model
    assert (out / "quality.png").stat().st_size > 0 and json.loads((out / "quality.json").read_text()) == report
    table = (out / "quality.md").read_text()
    assert "| mme | traj (traj_len=4, cell=8, traj_norm=none, shape=False), random 0.75, decoder 1 | 12 |" in table
    assert "| pixel-shuffled | pixel, random 0.75, decoder 1, shuffled frames | 12 |" in table
    assert "| scratch | no pretraining: a random encoder, fine-tuning from scratch | 0 |" in table
    assert (
        "| MME beats pixel (VideoMAE's target) by at least 10 points | no result for pixel | not evaluated |" in table
    )
    assert (
        "| fine-tuning from MME beats fine-tuning from scratch by at least 10 points (same budget) | from MME" in table
    )
    assert table.split("| pixel-shuffled |")[1].splitlines()[0].endswith("| - | 1 |")  # not fine-tuned
    printed = capfd.readouterr().out
    assert "2 at a time" in printed and "[1/3] mme seed 0: probe" in printed and "ETA" in printed and table in printed

    # Rerun with a second seed, one of whose runs finds a damaged checkpoint: the finished runs
    # are not redone, the failure is one line, the other runs go on, the report still comes out.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/checkpoint.pt")}
    damaged = out / "runs" / "mme-s1" / "pretrain" / "checkpoint.pt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")
    report = run_tiny(2, out, methods, 1, 1)
    printed = capfd.readouterr().out
    assert "3 already done" in printed and "[5/6] pixel-shuffled seed 1: probe" in printed
    assert f"[4/6] mme seed 1 failed: CheckpointError: {damaged}: not a readable checkpoint" in printed
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert [(r["method"], r["seed"]) for r in result_lines(out)][3:] == [("pixel-shuffled", 1), ("scratch", 1)]
    assert [(f["method"], f["seed"]) for f in report["failed"]] == [("mme", 1)]
    assert "CheckpointError" in (out / "runs" / "mme-s1" / "error.txt").read_text()
    assert "- mme seed 1: CheckpointError" in (out / "quality.md").read_text()
    assert report["methods"]["pixel-shuffled"]["seeds"] == 2 and report["methods"]["mme"]["seeds"] == 1

    with pytest.raises(QualityError, match="another budget"):
        run_quality(dataclasses.replace(TINY, pretrain_epochs=8), seeds=1, out=out, methods=["mme"])
    with pytest.raises(QualityError, match="unknown method"):
        run_quality(TINY, out=out, methods=["mme", "nonsense"])


def stats(*values, tuned=None):
    def of(values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else None
        return {"mean": mean, "std": std, "values": list(values)}

    return {"probe_top1": of(values), "finetune_top1": of(tuned) if tuned else None}


def test_claims_are_judged_from_the_means():
    summary = {
        "pixel": stats(0.20, 0.22),
        "mme": stats(0.35, 0.33, tuned=(0.50, 0.60)),
        "mgm": stats(0.25),
        "pixel-tube-0.75": stats(0.26),
        "mme-mgm": stats(0.30),
        "pixel-shuffled": stats(0.20),
        "mme-shuffled": stats(0.21),
        "mme-no-interp": stats(0.30),
        "mme-camera": stats(0.20),
        "mme-no-camera-comp": stats(0.25),
        "scratch": stats(0.10, tuned=(0.46,)),
        "mme-repeats-2": stats(0.31),
    }
    claims = {c["claim"]: c for c in check_claims(summary)}
    mme = claims["MME beats pixel (VideoMAE's target) by at least 10 points"]
    assert mme["met"] is True and mme["measured"] == "MME 34.0 ± 1.4 vs pixel 21.0 ± 1.4: +13.0 points"
    assert claims["MGM beats random tube at the same ratio (0.75)"]["met"] is False
    both = claims["MME+MGM beats MME and MGM alone"]  # beats MGM, not MME
    assert both["met"] is False and both["measured"] == "MME+MGM 30.0 vs MME 34.0 ± 1.4, MGM 25.0"
    shuffle = claims["shuffling costs MME more than pixel"]
    assert shuffle["met"] is True and shuffle["measured"] == "MME loses +13.0 points, pixel +1.0"
    assert claims["trajectory interpolation helps MME"]["met"] is True
    camera = claims["camera compensation helps MME on data with camera motion"]
    assert camera["met"] is False and camera["measured"] == "with 20.0 vs without 25.0: -5.0 points"
    tuned = claims["fine-tuning from MME beats fine-tuning from scratch by at least 10 points (same budget)"]
    assert tuned["met"] is False and tuned["measured"] == "from MME 55.0 ± 7.1 vs from scratch 46.0: +9.0 points"
    repeats = claims["2 clips per decoded span (data.repeats=2) at the same optimizer steps"]
    assert repeats["met"] is None and not repeats["goal"] and repeats["measured"].endswith("-3.0 points")
    assert "4 clips per decoded span (data.repeats=4) at the same optimizer steps" not in claims  # not run

    claims = {c["claim"]: c for c in check_claims({"mme-mgm": stats(0.3), "scratch": stats(0.1)})}
    assert claims["MME+MGM beats MME and MGM alone"]["met"] is None
    assert claims["MME beats pixel (VideoMAE's target) by at least 10 points"]["measured"] == "no result for mme, pixel"
    tuned = claims["fine-tuning from MME beats fine-tuning from scratch by at least 10 points (same budget)"]
    assert tuned["met"] is None and tuned["measured"] == "no result for mme, scratch"  # scratch: not fine-tuned


def config_of(name: str, seed: int = 0, budget: Budget = TINY):
    return pretrain_config(name, seed, budget, Path("data"), Path("cache"), Path("out"))


def test_every_method_changes_one_thing_of_the_base():
    base = load_config("demo")
    for name in METHODS:
        config = config_of(name, seed=1)
        assert config.optim.batch_size == 4 and config.run.seed == 1 and config.data.frames == 8
        assert config.model.size == "micro" and config.data.train == "data/train.csv"
        assert (config.data.size, config.model.patch, config.data.in_memory, config.run.threads) == (32, 8, True, 1)
    mme = config_of("mme")
    assert (mme.target, mme.mask, mme.model.decoder_depth) == (base.target, base.mask, base.model.decoder_depth)
    assert config_of("mme-no-interp").target.options == {**base.target.options, "interpolate": False}
    pixel = config_of("pixel-shuffled")
    assert (pixel.target.name, pixel.target.options, pixel.mask) == ("pixel", {}, base.mask)
    assert pixel.data.shuffle_frames and not mme.data.shuffle_frames
    videomae = config_of("videomae")  # a preset's target, mask and decoder depth
    assert (videomae.target.name, videomae.mask.kind, videomae.mask.ratio, videomae.model.decoder_depth) == (
        "pixel",
        "tube",
        0.9,
        4,
    )
    for name, kind in (("mgm", "mgm"), ("pixel-tube-0.75", "tube"), ("mme-mgm", "mgm")):
        assert (config_of(name).mask.kind, config_of(name).mask.ratio) == (kind, 0.75)
    # Equal optimizer steps: twice the clips per decoded span for half the epochs; scratch is not pretrained.
    repeats = [config_of(f"mme-repeats-{n}") for n in (2, 4)]
    assert [(r.data.repeats, r.optim.epochs) for r in repeats] == [(2, 2), (4, 1)] and mme.optim.epochs == 4
    assert config_of("scratch").optim.epochs == 0
    with pytest.raises(QualityError, match="not whole epochs"):
        config_of("mme-repeats-4", budget=dataclasses.replace(TINY, pretrain_epochs=6))
    # fine-tuning and the probe keep the run's data, clip, threads and seed
    tuned = quality.finetune_config(config_of("mme", seed=2), TINY, Path("ft"))
    assert (tuned.data.train, tuned.data.frames, tuned.data.size, tuned.model.patch) == ("data/train.csv", 8, 32, 8)
    assert (tuned.run.threads, tuned.run.seed, tuned.aug.mixup, tuned.optim.epochs) == (1, 2, 0, 1)
    probe = quality.probe_config(config_of("mme", seed=2), TINY, Path("probe"))
    assert (probe.data.val, probe.optim.epochs, probe.run.seed) == ("data/val.csv", 2, 2)


def test_an_out_takes_another_method_list_but_not_another_budget(tmp_path):
    quality.check_budget(tmp_path, quality.budget_record("custom", TINY))
    quality.check_budget(tmp_path, quality.budget_record("custom", dataclasses.replace(TINY, methods=("mme",))))
    with pytest.raises(QualityError, match="another budget"):
        quality.check_budget(tmp_path, quality.budget_record("custom", dataclasses.replace(TINY, finetuned=None)))


def test_each_budget_runs_methods_that_exist_in_whole_epochs():
    for budget in quality.BUDGETS.values():
        assert set(budget.methods) <= set(METHODS) and set(budget.finetuned or ()) <= set(budget.methods)
        for name in budget.methods:
            config_of(name, budget=budget)


def test_cli_methods_subset_reaches_the_benchmark(tmp_path, capsys):
    """`--methods` is split on commas and checked by run_quality: an unknown name is one line, exit 2."""
    from motionmae.cli.main import main

    assert main(["bench", "quality", "--methods", "mme,nonsense", "--seeds", "1", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("motionmae bench: error: unknown method(s) nonsense (known: mme, pixel, videomae,"), error
    assert "\n" not in error and not (tmp_path / "budget.json").exists()
    assert main(["bench", "quality", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert "--jobs 0: need at least 1" in capsys.readouterr().err
