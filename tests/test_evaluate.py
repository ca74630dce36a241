"""Linear probe, fine-tuning and multi-view testing on a tiny synthetic set (ViT-tiny, 32 px, 8 frames)."""

import json

import cv2
import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.common.lists import read_list
from motionmae.config import AugmentConfig, load_config
from motionmae.data.datasets import RANDAUG_OPS, ClipDataset, ClipSpec, RandAugment
from motionmae.data.synthetic import make_dataset
from motionmae.evaluation.evaluate import evaluate
from motionmae.models.checkpoints import CheckpointError
from motionmae.train.finetune import build_classifier, build_optimizer, finetune, mix_batch
from motionmae.train.pretrain import pretrain
from motionmae.train.probe import linear_probe

SMALL = [
    "model.size=tiny",
    "model.patch=16",
    "data.short_side=32",
    "data.size=32",
    "data.frames=8",
    "data.workers=0",
    "optim.batch_size=4",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 classes x 2 videos of 32 px x 24 frames: 12 train, 12 val; plus a 4-video train list."""
    out = make_dataset(
        tmp_path_factory.mktemp("data") / "syn", videos_per_class=2, size=32, frames=24, workers=1, progress=False
    )
    lines = (out / "train.csv").read_text().splitlines()
    (out / "four.csv").write_text("".join(line + "\n" for line in lines[:4]))
    return out


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


def finetune_config(data, out, *extra):
    return load_config(
        "finetune-demo",
        SMALL
        + [
            f"data.train={data / 'four.csv'}",
            f"data.val={data / 'val.csv'}",
            "optim.warmup_epochs=0",
            "optim.base_lr=0.1",
            "optim.epochs=10",
            "aug.mixup=0",
            "aug.cutmix=0",
            "aug.crop_area=[0.8, 1.0]",
            "run.log_every=1",
            "run.eval_every=0",
            f"run.out={out}",
            *extra,
        ],
        task="finetune",
    )


def probe_config(train, val, out, *extra):
    return load_config(None, [f"data.train={train}", f"data.val={val}", f"run.out={out}", *extra], task="linear-probe")


def evaluate_config(val, out, *extra):
    return load_config(None, [f"data.val={val}", f"run.out={out}", *extra], task="evaluate")


def losses(run_dir) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.fixture(scope="module")
def finetuned(data, pretrained, tmp_path_factory):
    """An uninterrupted 6-step fine-tuning run (the same 4 videos in every batch)."""
    out = tmp_path_factory.mktemp("finetune")
    finetune(finetune_config(data, out, "run.max_steps=6"), pretrained, progress=False)
    return out


@pytest.mark.slow  # pretraining and fine-tuning runs (module fixtures)
def test_linear_probe_gives_accuracy_and_caches_features(data, pretrained, tmp_path):
    config = probe_config(data / "train.csv", data / "val.csv", tmp_path, "data.workers=0", "data.train_views=[1, 3]")
    first = linear_probe(pretrained, config, progress=False)
    assert not first["features"]["train"]["cached"] and not first["features"]["val"]["cached"]
    assert first["videos"]["train"]["read"] == first["videos"]["val"]["read"] == 12
    assert 0 <= first["top1"] <= first["top5"] <= 1 and first["top5"] > 0
    assert first["train_top1"] > 0.5  # 36 views of 12 videos in 192 dimensions: a linear layer fits them
    assert torch.load(first["features"]["train"]["file"])["features"].shape == (12, 3, 192)
    second = linear_probe(pretrained, config, progress=False)
    assert second["features"]["train"]["cached"] and second["features"]["val"]["cached"]
    assert second["features"]["train"]["seconds"] < 0.5
    assert (second["top1"], second["top5"], second["train_top1"]) == (first["top1"], first["top5"], first["train_top1"])
    assert json.loads((tmp_path / "linear-probe.json").read_text())["top1"] == second["top1"]


@pytest.mark.slow  # pretraining and fine-tuning runs (module fixtures)
def test_finetune_loss_decreases_and_resumes_exactly(data, pretrained, finetuned, tmp_path):
    reference = losses(finetuned)
    assert len(reference) == 6
    assert np.mean(reference[-2:]) < np.mean(reference[:2])
    finetune(finetune_config(data, tmp_path, "run.max_steps=3"), pretrained, progress=False)
    result = finetune(finetune_config(data, tmp_path, "run.max_steps=6"), pretrained, resume="auto", progress=False)
    assert result.steps == 6
    assert losses(tmp_path) == pytest.approx(reference, rel=1e-5)


def test_layer_decay_gives_expected_lr_ratios():
    config = load_config("finetune-demo", ["model.size=tiny", "optim.layer_decay=0.5"], task="finetune")
    model = build_classifier(config, num_classes=5)
    optimizer = build_optimizer(model, config, lr=1.0)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters())) == sum(len(g["params"]) for g in optimizer.param_groups)
    assert lr_of[id(model.head.weight)] == lr_of[id(model.fc_norm.weight)] == 1.0
    for i, block in enumerate(model.encoder.blocks):  # block i is layer i + 1 of depth + 1 = 13
        assert lr_of[id(block.attn.qkv.weight)] == pytest.approx(0.5 ** (12 - i))
        assert lr_of[id(block.mlp.fc1.bias)] == lr_of[id(block.attn.qkv.weight)]
    assert lr_of[id(model.encoder.patch_embed.proj.weight)] == pytest.approx(0.5**13)
    assert decay_of[id(model.encoder.blocks[0].attn.q_bias)] == 0 and decay_of[id(model.head.weight)] == 0.05


def test_mixup_and_cutmix_targets_sum_to_one():
    video = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1, 1).expand(6, 3, 4, 16, 16) + 1
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    for kind, aug in [
        ("mixup", AugmentConfig(cutmix=0, label_smoothing=0.1)),
        ("cutmix", AugmentConfig(mixup=0, label_smoothing=0.0)),
    ]:
        for seed in range(20):
            mixed, targets = mix_batch(video, labels, 10, aug, np.random.default_rng(seed))
            assert mixed.shape == video.shape and targets.shape == (6, 10)
            assert torch.allclose(targets.sum(1), torch.ones(6)) and (targets >= 0).all()
            if kind == "cutmix":  # the target weight of a video's own label is the share of its pixels kept
                kept = (mixed[0] == video[0]).float().mean()
                assert targets[0, 0] == pytest.approx(kept.item())
                assert ((mixed[0] == video[0]) | (mixed[0] == video[5])).all()


def test_randaugment_is_identical_over_frames():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image[8:24, 8:24] = (200, 40, 40)
    clip = np.repeat(image[None], 4, axis=0)
    for name, op in RANDAUG_OPS.items():
        out = op(clip, 0.9, np.random.default_rng(1))
        assert out.shape == clip.shape and out.dtype == np.uint8, name
        assert all((frame == out[0]).all() for frame in out), name
    changed = 0
    for seed in range(20):
        out = RandAugment(ops=3, magnitude=9, std=0.5)(clip, np.random.default_rng(seed))
        assert all((frame == out[0]).all() for frame in out)
        changed += not np.array_equal(out, clip)
    assert changed >= 15


@pytest.mark.slow  # pretraining and fine-tuning runs (module fixtures)
def test_evaluate_views_per_video_and_confusion_picture(data, finetuned, tmp_path, capsys):
    spec = ClipSpec(frames=8, sampling="segment", size=32, short_side=32)
    item = ClipDataset(read_list(data / "val.csv"), spec, clips=2, crops=3)[0]
    assert item["frames"].shape == (6, 8, 32, 32, 3) and item["ok"]
    result = evaluate(
        finetuned / "checkpoint.pt",
        evaluate_config(data / "val.csv", tmp_path, "data.clips=2", "data.crops=3", "data.workers=0"),
        progress=False,
    )
    assert result["views"] == 6 and result["videos"]["read"] == result["videos"]["videos"] == 12
    assert result["videos"]["skipped"] == 0
    assert np.array(result["confusion"]).sum() == 12 and len(result["per_class"]) == 12
    assert 0 <= result["top1"] <= result["top5"] <= 1
    picture = cv2.imread(str(tmp_path / "confusion.png"))
    assert picture is not None and picture.shape[0] > 12 * 20 and picture.shape[1] > 12 * 20
    code = main(
        [
            "evaluate",
            str(finetuned / "checkpoint.pt"),
            "--val",
            str(data / "val.csv"),
            "--clips",
            "1",
            "--crops",
            "1",
            "--out",
            str(tmp_path / "cli"),
            "--set",
            "data.workers=0",
        ]
    )
    assert code == 0 and "over 12 of 12 videos (1 clips x 1 crops = 1 views each)" in capsys.readouterr().out


@pytest.mark.slow  # pretraining and fine-tuning runs (module fixtures)
def test_checkpoint_of_another_size_is_one_clear_error(data, pretrained, finetuned, tmp_path, capsys):
    code = main(
        [
            "finetune",
            str(pretrained),
            "--train",
            str(data / "four.csv"),
            "--val",
            str(data / "val.csv"),
            "--out",
            str(tmp_path),
            *[f"--set={s}" for s in SMALL],
            "--set",
            "model.size=small",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "does not fit this model" in err and "blocks.0.attn.v_bias (192,) vs model (384,)" in err
    assert err.endswith("it holds a ViT-tiny: set model.size=tiny")
    with pytest.raises(CheckpointError, match="shape mismatch: .*blocks.0"):
        linear_probe(pretrained, probe_config(data / "four.csv", data / "val.csv", tmp_path, "model.size=small"))
    with pytest.raises(CheckpointError, match="not a fine-tuning checkpoint"):
        evaluate(pretrained, evaluate_config(data / "val.csv", tmp_path))
    with pytest.raises(CheckpointError, match=r"head.weight \(12, 192\) vs model \(20, 192\)"):  # another target
        finetune(finetune_config(data, tmp_path, "data.num_classes=20"), resume=finetuned / "checkpoint.pt")


@pytest.mark.slow  # pretraining and fine-tuning runs (module fixtures)
def test_missing_and_broken_videos_are_skipped_and_counted(data, pretrained, finetuned, tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    lines = (data / "val.csv").read_text().splitlines()
    bad = tmp_path / "val.csv"
    bad.write_text(
        "".join(f"{data / line.split()[0]} {line.split()[1]}\n" for line in lines)
        + f"{tmp_path / 'missing.mp4'} 0\nbroken.mp4 3\n"
    )
    result = evaluate(
        finetuned / "checkpoint.pt",
        evaluate_config(bad, tmp_path / "eval", "data.clips=1", "data.crops=1", "data.workers=0"),
        progress=False,
    )
    videos = result["videos"]
    assert (videos["videos"], videos["read"], videos["skipped"]) == (14, 12, 2)
    assert sorted(v["path"].split("/")[-1] for v in videos["skipped_videos"]) == ["broken.mp4", "missing.mp4"]
    assert videos["skipped_reasons"] == {"video_not_found": 1, "not_a_video": 1}
    assert np.array(result["confusion"]).sum() == 12
    probe = linear_probe(
        pretrained, probe_config(data / "four.csv", bad, tmp_path / "probe", "data.workers=0"), progress=False
    )
    assert probe["videos"]["val"] == videos and probe["videos"]["train"]["read"] == 4
    code = main(
        [
            "evaluate",
            str(finetuned / "checkpoint.pt"),
            "--val",
            str(bad),
            "--clips",
            "1",
            "--crops",
            "1",
            "--out",
            str(tmp_path / "cli"),
            "--set",
            "data.workers=0",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and "over 12 of 14 videos" in captured.out
    assert "videos: 12 of 14 videos read, 2 skipped (video_not_found 1, not_a_video 1)" in captured.out
    assert "2 video(s) could not be read and were skipped" in captured.err
    assert json.loads((tmp_path / "cli" / "evaluate.json").read_text())["videos"] == videos
