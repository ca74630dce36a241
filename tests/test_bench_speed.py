"""`motionmae bench speed`: the real --quick path end to end (structure only, nothing timed here)."""

import json
import math
import stat

import pytest

from bench.speed import PREPARE_STAGES, tvl1_seconds
from motionmae.cli.main import main

COMPARISONS = {
    "decode": {"vectors_vs_plain_time"},
    "prepare": {"prepare_vs_decode_time"},  # + the TV-L1 ratios when its venv is there
    "train": {"ours_vs_hf_speed", "ours_vs_hf_memory", "ours_compiled_vs_hf_speed", "ours_compiled_vs_hf_memory"},
    "loader": {"loader_vs_model_clips", "worker_vs_model_clips"},
}


@pytest.mark.slow  # the speed benchmark
def test_quick_run_prints_and_writes_every_comparison_and_skips_a_missing_tvl1_env(bikes, tmp_path, capsys):
    pytest.importorskip("transformers")
    missing = tmp_path / "no-venv" / "bin" / "python"
    assert main(["bench", "speed", "--quick", "--tvl1-python", str(missing), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("motionmae bench speed --quick") and "\nmachine: " in printed
    for section in ("[1/4] decode", "[2/4] prepare", "[3/4] pretraining step", "[4/4] data loader"):
        assert section in printed
    assert f"TV-L1 skipped: {missing} not found; `make bench` creates it" in printed
    assert (
        printed.count("ratio: ") == 5
    )  # one per comparison (two for eager / compiled training), none for the skipped peer

    report = json.loads((tmp_path / "out" / "speed.json").read_text())
    assert not list((tmp_path / "out").glob(".*.tmp"))
    assert report["options"] == {"quick": True, "threads": 1, "tvl1_python": str(missing)}
    assert {"platform", "cpus", "torch", "cv2", "av"} <= set(report["machine"])
    assert set(report["comparisons"]) == set(COMPARISONS)
    for name, ratios in COMPARISONS.items():
        comparison = report["comparisons"][name]
        assert comparison["config"] and comparison["figures"]
        assert set(comparison["ratios"]) == ratios, name
        for value in comparison["ratios"].values():
            assert math.isfinite(value) and value > 0, (name, value)
    for side in report["comparisons"]["train"]["figures"].values():  # --quick takes 2 rounds: the median of 2
        assert len(side["rounds"]) == 2 and side["clips_per_s"] == pytest.approx(sum(side["rounds"]) / 2)
    assert "(rounds: " in printed
    steps = report["comparisons"]["prepare"]["figures"]["prepare_steps_cpu_ms_per_frame"]
    assert list(steps) == list(PREPARE_STAGES) and all(ms > 0 for ms in steps.values())
    assert "its steps, CPU ms/frame timed one at a time: decode " in printed
    assert report["comparisons"]["prepare"]["skipped"].startswith(f"{missing} not found")
    assert "tvl1_ms_per_pair" not in report["comparisons"]["prepare"]["figures"]


def test_a_failing_tvl1_env_reports_its_last_error_line(tmp_path, bikes):
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\necho 'Traceback ...' >&2\necho \"AttributeError: module 'cv2' has no attribute "
        "'optflow'\" >&2\nexit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    import numpy as np

    with pytest.raises(RuntimeError, match="has no attribute 'optflow'"):
        tvl1_seconds(np.zeros((2, 8, 8), np.uint8), fake, 1)


def test_bench_mistakes_are_one_line_errors(capsys):
    assert main(["bench", "speed", "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "motionmae bench: error: --threads 0: need at least 1"
    assert main(["bench", "quality", "--seeds", "0"]) == 2
    assert capsys.readouterr().err.strip() == "motionmae bench: error: --seeds 0: need at least 1"
