"""Files from outside run no code: every command that loads a checkpoint (or a feature cache) is given a
pickle whose payload would create a marker file, and must refuse it with one line; our own files and
their .safetensors exports load the safe way and give back exactly what was saved."""

import argparse
import json
import os
import pickle
import random

import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.config import load_config
from motionmae.data.synthetic import make_dataset
from motionmae.evaluation.visualize import visualize_checkpoint
from motionmae.models import checkpoints
from motionmae.models.checkpoints import CheckpointError
from motionmae.models.interop import model_from_checkpoint
from motionmae.models.vit import VisionTransformer
from motionmae.train.finetune import finetune, load_classifier
from motionmae.train.pretrain import pretrain

SMALL = ["data.short_side=32", "data.size=32", "data.frames=8", "data.workers=0", "optim.batch_size=4"]
SYSTEM = f"{os.system.__module__}.system"  # how pickle names os.system: posix.system on Linux


class Payload:
    """Unpickling this runs `touch MARKER` (what a hostile checkpoint would do, less harmfully)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def poison(path, marker, protocol=None):
    """A checkpoint-shaped file whose "model" entry runs the payload: torch's zip format, or a bare pickle."""
    obj = {"model": Payload(marker), "config": {"task": "finetune"}, "step": 1}
    if protocol:
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    else:
        torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 classes x 2 videos of 32 px x 24 frames (12 train, 12 val)."""
    return make_dataset(
        tmp_path_factory.mktemp("data") / "syn", videos_per_class=2, size=32, frames=24, workers=1, progress=False
    )


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    """A ViT-tiny pretraining checkpoint (pixel target, 1 step)."""
    config = load_config(
        "demo",
        SMALL
        + [
            "target.name=pixel",
            "target.options=null",
            f"data.train={data / 'train.csv'}",
            "run.max_steps=1",
            f"run.out={tmp_path_factory.mktemp('pretrain')}",
        ],
    )
    return pretrain(config).checkpoint


@pytest.fixture(scope="module")
def finetuned(data, pretrained, tmp_path_factory):
    """A ViT-tiny fine-tuning checkpoint (1 step)."""
    config = load_config(
        "finetune-demo",
        SMALL
        + [
            f"data.train={data / 'train.csv'}",
            f"data.val={data / 'val.csv'}",
            "run.max_steps=1",
            "run.eval_every=0",
            f"run.out={tmp_path_factory.mktemp('finetune')}",
        ],
        task="finetune",
    )
    return finetune(config, pretrained, progress=False).checkpoint


# ---------------------------------------------------------------- hostile files


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """The control: both poisoned formats do run their payload under a plain unpickler."""
    for protocol, unpickle in (
        (None, lambda path: torch.load(path, weights_only=False)),
        (2, lambda path: pickle.loads(path.read_bytes())),
        (5, lambda path: pickle.loads(path.read_bytes())),
    ):
        marker = tmp_path / f"MARKER-{protocol}"
        unpickle(poison(tmp_path / f"evil-{protocol}.pth", marker, protocol))
        assert marker.exists()


def _hf_folder(tmp_path, marker):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "videomae", "num_frames": 8, "image_size": 32}))
    poison(folder / "pytorch_model.bin", marker)
    return folder, folder / "pytorch_model.bin"


def _feature_cache(tmp_path, marker, data, pretrained):
    """Run the linear probe once, then replace its cached training features with a poisoned file."""
    argv = [
        "linear-probe",
        str(pretrained),
        "--train",
        str(data / "train.csv"),
        "--val",
        str(data / "val.csv"),
        "--out",
        str(tmp_path / "probe"),
        "--set",
        "optim.epochs=1",
        "--set",
        "data.workers=0",
    ]
    assert main(argv) == 0
    [cache] = (tmp_path / "probe" / "features").glob("train-*.pt")
    poison(cache, marker)
    return argv, cache


def _lists(data):
    return ["--train", str(data / "train.csv"), "--val", str(data / "val.csv")]


def _sets(overrides):
    return [arg for value in overrides for arg in ("--set", value)]


def _pretrain_sets(data, tmp_path):
    return _sets(
        SMALL
        + [
            "target.name=pixel",
            "target.options=null",
            f"data.train={data / 'train.csv'}",
            f"run.out={tmp_path / 'run'}",
        ]
    )


# each case: (tmp_path, marker, data, pretrained) -> (argv, the poisoned file the error must name)
COMMANDS = {
    "convert": lambda t, m, d, p: (["convert", str(poison(t / "evil.pth", m)), str(t / "out")], t / "evil.pth"),
    "convert-bare-pickle": lambda t, m, d, p: (
        ["convert", str(poison(t / "evil.pth", m, protocol=2)), str(t / "out")],
        t / "evil.pth",
    ),
    "convert-bare-pickle-protocol-5": lambda t, m, d, p: (
        ["convert", str(poison(t / "evil.pth", m, protocol=5)), str(t / "out")],
        t / "evil.pth",
    ),
    "convert-hf-folder": lambda t, m, d, p: (
        ["convert", str(_hf_folder(t, m)[0]), str(t / "out.pt")],
        t / "hf" / "pytorch_model.bin",
    ),
    "finetune": lambda t, m, d, p: (
        ["finetune", str(poison(t / "evil.pt", m)), *_lists(d), *_sets(SMALL), "--out", str(t / "run")],
        t / "evil.pt",
    ),
    "finetune-resume": lambda t, m, d, p: (
        [
            "finetune",
            "none",
            *_lists(d),
            *_sets(SMALL + ["model.size=tiny"]),
            "--out",
            str(t / "run"),
            "--resume",
            str(poison(t / "evil.pt", m)),
        ],
        t / "evil.pt",
    ),
    "pretrain-resume": lambda t, m, d, p: (
        ["pretrain", "--config", "demo", *_pretrain_sets(d, t), "--resume", str(poison(t / "evil.pt", m))],
        t / "evil.pt",
    ),
    "linear-probe": lambda t, m, d, p: (
        ["linear-probe", str(poison(t / "evil.pt", m)), *_lists(d), "--set", "data.workers=0"],
        t / "evil.pt",
    ),
    "linear-probe-feature-cache": lambda t, m, d, p: _feature_cache(t, m, d, p),
    "evaluate": lambda t, m, d, p: (
        ["evaluate", str(poison(t / "evil.pt", m)), "--val", str(d / "val.csv"), "--set", "data.workers=0"],
        t / "evil.pt",
    ),
    "visualize": lambda t, m, d, p: (
        [
            "visualize",
            str(poison(t / "evil.pt", m)),
            str(next((d / "videos").rglob("*.mp4"))),
            "--out",
            str(t / "v.png"),
        ],
        t / "evil.pt",
    ),
    "upgrade-checkpoint": lambda t, m, d, p: (["upgrade-checkpoint", str(poison(t / "evil.pt", m))], t / "evil.pt"),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_hostile_pickle_runs_no_code_and_gives_one_line(command, data, pretrained, tmp_path, capsys):
    torch.set_num_threads(1)
    marker = tmp_path / "MARKER"
    argv, evil = COMMANDS[command](tmp_path, marker, data, pretrained)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert not marker.exists()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    expected = (
        "needs unsafe unpickling" if command.endswith("protocol-5") else f"refused: unpickling it would call {SYSTEM}"
    )
    assert lines[0].startswith(f"motionmae {argv[0]}: error: {evil}: ") and expected in lines[0]
    assert "Traceback" not in out + err


# ---------------------------------------------------------------- our files, the safe way


def test_our_checkpoints_need_no_allowed_global(pretrained, finetuned):
    """Nothing in them beyond tensors and plain values: plain torch.load(weights_only=True) reads them."""
    for path in (pretrained, finetuned):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        assert torch.load(path, weights_only=True)["step"] == 1


def draws():
    return random.random(), np.random.random(3).tolist(), np.random.normal(), torch.rand(3).tolist()


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state
    checkpoints.atomic_save({"rng": [checkpoints.rng_state()]}, tmp_path / "rng.pt")
    expected = draws()
    draws()  # move every generator on
    checkpoints.set_rng_state(checkpoints.load(tmp_path / "rng.pt")["rng"][0])
    assert draws() == expected


def test_a_motionmae_0_1_checkpoint_is_refused_then_upgraded(pretrained, tmp_path, capsys):
    """0.1 pickled NumPy's RNG state as an array: refused with a way forward, which keeps the state."""
    state = checkpoints.load(pretrained)
    np.random.seed(5)
    old_numpy = np.random.get_state()
    state["rng"] = [{**state["rng"][0], "numpy": old_numpy}]
    old = tmp_path / "checkpoint.pt"
    torch.save(state, old)

    with pytest.raises(CheckpointError, match=r"holds NumPy arrays .*motionmae upgrade-checkpoint") as err:
        checkpoints.load(old)
    assert str(old) in str(err.value) and "\n" not in str(err.value)
    assert main(["upgrade-checkpoint", str(old)]) == 0
    upgraded = checkpoints.load(old)
    np.random.seed(0)
    checkpoints.set_rng_state(upgraded["rng"][0])
    after = np.random.get_state()
    assert after[0] == old_numpy[0] and np.array_equal(after[1], old_numpy[1]) and after[2:] == old_numpy[2:]
    assert all(torch.equal(v, state["model"][k]) for k, v in upgraded["model"].items())


def test_official_checkpoint_with_argparse_namespace_loads(tmp_path):
    """VideoMAE's training script saves its command line as an argparse.Namespace under "args"."""
    encoder = VisionTransformer("tiny", 4, 32)
    args = argparse.Namespace(
        model="pretrain_videomae_tiny_patch16_224", lr=1.5e-3, input_size=32, window_size=(2, 2, 2), resume=""
    )
    torch.save({"model": encoder.state_dict(), "epoch": 799, "args": args}, tmp_path / "official.pth")
    assert checkpoints.load(tmp_path / "official.pth")["args"] == args
    model, loaded = model_from_checkpoint(tmp_path / "official.pth", frames=4, img_size=32)
    assert loaded.layout == "VideoMAE encoder"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in encoder.state_dict().items())


def test_safetensors_export_loads_back_identically(pretrained, finetuned, data, tmp_path, capsys):
    for name, path in (("pretrained", pretrained), ("finetuned", finetuned)):
        out = tmp_path / f"{name}.safetensors"
        assert main(["convert", str(path), str(out), "--to", "safetensors"]) == 0
        original, exported = checkpoints.load(path), checkpoints.load(out)
        assert exported["model"].keys() == original["model"].keys()
        assert all(torch.equal(v, original["model"][k]) for k, v in exported["model"].items())
        assert exported["config"] == json.loads(json.dumps(original["config"]))
        assert {"optimizer", "scheduler", "rng"}.isdisjoint(exported)  # weights only
        model, loaded = model_from_checkpoint(out)
        assert loaded.layout == "motionmae checkpoint"
        assert all(torch.equal(v, original["model"][k]) for k, v in model.state_dict().items())

    video = next((data / "videos").rglob("*.mp4"))
    assert np.array_equal(
        visualize_checkpoint(pretrained, video, seed=1).reconstruction,
        visualize_checkpoint(tmp_path / "pretrained.safetensors", video, seed=1).reconstruction,
    )
    (pt, pt_config), (st, st_config) = load_classifier(finetuned), load_classifier(tmp_path / "finetuned.safetensors")
    assert st_config == pt_config and all(torch.equal(v, pt.state_dict()[k]) for k, v in st.state_dict().items())
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "finetuned.safetensors"),
                "--val",
                str(data / "val.csv"),
                "--clips",
                "1",
                "--crops",
                "1",
                "--set",
                "data.workers=0",
                "--out",
                str(tmp_path / "evaluate"),
            ]
        )
        == 0
    )

    assert main(["convert", str(pretrained), str(tmp_path / "x.pt"), "--to", "safetensors"]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_resume_refuses_a_weights_only_export(data, pretrained, tmp_path, capsys):
    export = tmp_path / "weights.safetensors"
    assert main(["convert", str(pretrained), str(export)]) == 0
    capsys.readouterr()
    argv = ["pretrain", "--config", "demo", *_pretrain_sets(data, tmp_path), "--resume", str(export)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"motionmae pretrain: error: {export}: cannot resume from it (no optimizer, scheduler, scaler, "
        f"rng, step); --resume takes the checkpoint.pt of a run folder"
    )
