"""Every command's user mistakes: one line `motionmae <command>: error: ...`, exit code 2 for a
usage error (a flag, argument or config value), 1 for a failure (a file that cannot be used)."""

import importlib
import inspect
import pkgutil

import pytest
import torch

import motionmae
from motionmae.cli.main import main
from motionmae.errors import MotionMAEError, UsageError


@pytest.fixture(scope="module")
def files(tmp_path_factory, bikes):
    """Real files a user might pass by mistake: a text file named .mp4, a binary list, a checkpoint
    without weights, a YAML file that does not parse, a list of one shipped video, an empty folder."""
    root = tmp_path_factory.mktemp("mistakes")
    (root / "notes.mp4").write_text("not a video\n")
    (root / "blob.csv").write_bytes(bytes(range(256)) * 4)
    torch.save({"epoch": 3}, root / "odd.pth")
    (root / "bad.yaml").write_text("data: {train: [unclosed\n")
    (root / "one.csv").write_text(f"{bikes} 0\n")
    (root / "empty").mkdir()
    return root


CASES = [  # (argv with {root} and {bikes} filled in, exit code, part of the message)
    ("make-synthetic {root}/out --size 33", 2, "must be even"),
    ("prepare {root}/blob.csv --cache {root}/cache", 1, "not a list file (binary content)"),
    ("prepare {root}/missing.csv --cache {root}/cache", 1, "no such list file or folder"),
    ("prepare {root}/one.csv --cache {root}/cache --shard 2/2", 2, "--shard 2/2"),
    ("pack {root}/one.csv --cache {root}/empty --out {root}/shards", 1, "no motion cache made"),
    ("pretrain --config no-such-preset", 2, "no config file or preset named 'no-such-preset'"),
    ("pretrain --config {root}/bad.yaml", 2, "not valid YAML"),
    ("pretrain --config demo --set optim.epoch=3", 2, "unknown key 'epoch'"),
    ("pretrain --config demo --set target.options.traj_length=4", 2, "no option(s) traj_length (valid: bins"),
    (
        "pretrain --config demo --set mask.options.sparse=true",
        2,
        "mask.options: unknown option(s) sparse (valid: none)",
    ),
    ("pretrain --config demo --set target.options.traj_len=four", 2, "traj_len: expected int, got 'four'"),
    ("pretrain --config demo --set model.head=conv", 2, "model.head: expected one of linear, mlp, got 'conv'"),
    (
        "pretrain --config demo --set target.options.traj_norm=tokn",
        2,
        "target.options.traj_norm: expected one of scale, token, across_k, none, got 'tokn'",
    ),
    ("pretrain --config maskfeat --set target.options.norm=L2", 2, "target.options.norm: expected one of none, token"),
    (
        "finetune none --train {root}/one.csv --val {root}/one.csv --set data.sampling=tsn",
        2,
        "data.sampling: expected one of dense, segment",
    ),
    ("pretrain --config demo --set data.train={root}/missing.csv --set run.out={root}/run", 1, "no such list file"),
    ("linear-probe {root}/missing.pt --train {root}/one.csv --val {root}/one.csv", 1, "no such checkpoint"),
    (
        "finetune {root}/missing.pt --train {root}/one.csv --val {root}/one.csv --set run.out={root}/ft "
        "--set optim.batch_size=1",
        1,
        "no such checkpoint",
    ),
    ("finetune none --train {root}/one.csv --val {root}/one.csv --config mme", 2, "is a pretrain config"),
    ("evaluate {root}/missing.pt --val {root}/one.csv", 1, "no such checkpoint"),
    ("evaluate {root}/missing.pt --val {root}/one.csv --crops 4", 2, "data.crops: expected a whole number from 1 to 3"),
    ("linear-probe {root}/missing.pt --set data.train_views=2x3", 2, "data.train_views: expected [clips, crops]"),
    ("linear-probe {root}/missing.pt --config {root}/bad.yaml", 2, "not valid YAML"),
    ("visualize {root}/missing.pt {bikes} --out {root}/x.png", 1, "no such checkpoint"),
    ("visualize-masks {root}/notes.mp4 --out {root}/x.png", 1, "not a readable video"),
    ("visualize-masks {bikes} --frames 15 --out {root}/x.png", 2, "--frames 15 is not a multiple of --tubelet 2"),
    ("convert {root}/odd.pth {root}/out", 1, "holds no state dict"),
    ("convert {root}/odd.pth {root}/x.pt --to safetensors", 2, "must end in .safetensors"),
    ("upgrade-checkpoint {root}/missing.pt", 1, "no such checkpoint"),
    ("demo --config no-such-preset", 2, "no config file or preset named"),
    ("bench speed --threads 0", 2, "--threads 0: need at least 1"),
    ("bench loader --config demo --list {root}/one.csv --clips 5", 2, "not a multiple of --repeats"),
    ("bench quality --seeds 0", 2, "--seeds 0"),
]


@pytest.mark.parametrize("argv,code,message", CASES, ids=[case[0].split(" {")[0] for case in CASES])
def test_a_user_mistake_is_one_line_and_its_exit_code(files, bikes, capsys, argv, code, message):
    args = argv.format(root=files, bikes=bikes).split()
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.startswith(f"motionmae {args[0]}: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_every_error_class_of_the_library_is_a_motionmae_error():
    """An exception class the library defines is a MotionMAEError, or one of the internal ones that
    a batch job catches and reports per video (never reaching the user as an error)."""
    internal = {"SampleError", "CorruptSampleError", "MissingSampleError", "Unpackable"}  # and private ones (_Lost)
    found, wrong = set(), []
    for info in pkgutil.walk_packages(motionmae.__path__, "motionmae."):
        if info.name == "motionmae.__main__":  # runs the command line when imported
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == info.name
                and issubclass(cls, BaseException)
                and name not in internal
                and not name.startswith("_")
            ):
                found.add(name)
                if not issubclass(cls, MotionMAEError):
                    wrong.append(f"{info.name}.{name}")
    assert {"ConfigError", "ListError", "VideoError", "CacheError", "CheckpointError", "ShardError"} <= found
    assert not wrong, f"not MotionMAEError subclasses: {wrong}"


def test_usage_errors_are_value_errors_and_exit_2():
    """Usage errors stay ValueErrors (callers catching ValueError keep working); failures exit 1."""
    from motionmae.common.lists import ListError
    from motionmae.config import ConfigError

    assert issubclass(ConfigError, UsageError) and issubclass(UsageError, ValueError)
    assert ConfigError("x").exit_code == 2 and ListError("x").exit_code == 1
