"""The fast pretraining loader (issue 18): frame-exact sparse decoding, repeated sampling, the same
samples as the loader before it, and `motionmae bench loader`."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.common.lists import read_list
from motionmae.common.rng import repeat_rng, sample_rng
from motionmae.config import ConfigError, DataConfig, load_config
from motionmae.data.datasets import PretrainDataset, collate
from motionmae.io.video import write_video
from motionmae.models.vit import token_grid
from motionmae.motion.masking import MaskGenerator
from motionmae.motion.targets import build_target
from motionmae.train.pretrain import build_dataset


def time_coded(frames=26, height=64, width=96) -> np.ndarray:
    """RGB uint8 (T <= 26, H, W, 3): red = 20 + 9 t says which frame it is; green and blue are static
    ramps, so that two crops of a frame differ."""
    y, x = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    video[..., 1], video[..., 2] = x * 255 // width, y * 255 // height
    video[..., 0] = (20 + 9 * np.arange(frames))[:, None, None]
    return video


@pytest.fixture(scope="module")
def coded_list(tmp_path_factory):
    """Two time-coded videos in a list (no motion cache: for targets without flow)."""
    root = tmp_path_factory.mktemp("coded")
    for name in ("a", "b"):
        write_video(root / f"{name}.mp4", time_coded())
    (root / "list.txt").write_text("a.mp4 0\nb.mp4 1\n")
    return root / "list.txt"


def test_repeats_are_several_crops_and_masks_of_one_decoded_span(coded_list):
    data = DataConfig(train=str(coded_list), short_side=64, frames=4, stride=3, size=32, repeats=3)
    target = build_target("pixel")
    masks = MaskGenerator("tube", 0.5, token_grid(4, 32, 2, 16))
    ds = PretrainDataset(
        read_list(coded_list),
        data,
        target.raw_span(4, 3),
        masks,
        seed=5,
        needs_flow=False,
        reads=target.span_reads(4, 3),
    )
    inputs = slice(0, 10, 3)

    def frame_numbers(sample):  # which frame of the video each input frame is, from its red level
        return ((sample["frames"][inputs, ..., 0].float().mean((1, 2)) - 20) / 9).round().int().tolist()

    for key in [(0, 0), (0, 1), (2, 1)]:
        samples = ds[key]
        assert len(samples) == 3 and len({s["video"].item() for s in samples}) == 1
        numbers = [frame_numbers(s) for s in samples]
        assert numbers[0] == numbers[1] == numbers[2] and np.all(np.diff(numbers[0]) == 3)  # one span
        crops = [s["frames"][inputs, ..., 1:] for s in samples]
        assert not (torch.equal(crops[0], crops[1]) and torch.equal(crops[1], crops[2]))  # its own crop
        assert len({tuple(s["mask"].tolist()) for s in samples}) > 1  # and mask
        again = ds[key]
        assert all(
            torch.equal(s["frames"], t["frames"]) and torch.equal(s["mask"], t["mask"]) for s, t in zip(samples, again)
        )
    starts = {frame_numbers(ds[(epoch, 0)][0])[0] for epoch in range(6)}
    assert len(starts) > 1  # the span itself is random
    other = PretrainDataset(read_list(coded_list), data, target.raw_span(4, 3), masks, seed=6, needs_flow=False)
    assert not all(torch.equal(s["mask"], t["mask"]) for s, t in zip(ds[(0, 0)], other[(0, 0)]))
    # the first repeat is the sample without repeats; collate joins the lists into one batch of clips
    single = PretrainDataset(
        read_list(coded_list),
        dataclasses.replace(data, repeats=1),
        target.raw_span(4, 3),
        masks,
        seed=5,
        needs_flow=False,
        reads=target.span_reads(4, 3),
    )
    assert torch.equal(single[(0, 1)]["frames"], ds[(0, 1)][0]["frames"])
    batch = collate([ds[(0, 0)], ds[(0, 1)]])
    assert batch["frames"].shape[0] == 6 and batch["video"].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ConfigError, match="data.repeats must be at least 1"):
        PretrainDataset(read_list(coded_list), dataclasses.replace(data, repeats=0), 10, masks, needs_flow=False)


@pytest.mark.parametrize("preset", ["mme", "videomae", "mgm"])
def test_the_fast_loader_gives_the_samples_of_the_loader_before_it(preset, tiny_synthetic):
    """Options off (data.fast_loader=false) is the loader before issue 18; on, the places the target
    reads hold the same frames and flow (to 0.02 px: the mirror is now part of the flow's warp), the
    others zeros, and the targets built from them are the same."""
    data, cache = tiny_synthetic
    config = load_config(
        preset,
        [
            f"data.train={data / 'train.csv'}",
            f"data.cache={cache}",
            "data.short_side=64",
            "data.size=32",
            "data.frames=4",
            "data.stride=3",
        ],
    )
    target = build_target(config.target.name, **config.target.options)
    fast = build_dataset(config, target)
    before = build_dataset(
        dataclasses.replace(config, data=dataclasses.replace(config.data, fast_loader=False)), target
    )
    frames_read, flows_read = fast.frames_read, fast.flows_read
    assert len(frames_read) < fast.raw_span and len(before.frames_read) == fast.raw_span
    for key in [(0, i) for i in range(6)]:
        new, old = fast[key], before[key]
        assert torch.equal(new["frames"][frames_read], old["frames"][frames_read])
        unread = np.setdiff1d(np.arange(fast.raw_span), frames_read)
        assert not new["frames"][unread].any()
        assert torch.equal(new["mask"], old["mask"]) and torch.equal(new["cuts"], old["cuts"])
        assert new["mask_source"] == old["mask_source"] == ("mv" if preset == "mgm" else "none")
        if target.needs_flow:
            assert torch.allclose(new["flow"][flows_read], old["flow"][flows_read], atol=0.02)
        batch = [torch.stack([s[k] for s in (new, old)]) for k in ("frames", "flow")]
        y, valid = target(batch[0], batch[1] if target.needs_flow else None, 4, 3)
        assert torch.allclose(y[0], y[1], atol=0.05) and torch.equal(valid[0], valid[1])


def test_bench_loader_writes_every_side(tiny_synthetic, tmp_path, capsys):
    data, cache = tiny_synthetic
    argv = [
        "bench",
        "loader",
        "--config",
        "demo",
        "--list",
        str(data / "train.csv"),
        "--cache",
        str(cache),
        "--clips",
        "4",
        "--repeats",
        "2",
        "--rounds",
        "1",
        "--set",
        "data.frames=8",
        "--set",
        "data.short_side=64",
        "--set",
        "data.size=64",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "\nmachine: " in printed and "config: demo: 8 frames at stride 2" in printed and "ratio: " in printed
    report = json.loads((tmp_path / "loader.json").read_text())
    assert set(report["sides"]) == {"before", "peer", "new_whole_span", "new_single", "new"}
    for side in report["sides"].values():
        assert side["clips_per_s_per_core"] > 0 and side["clips_per_s_wall"] > 0 and len(side["rounds"]) == 1
    assert all(math.isfinite(r) and r > 0 for r in report["ratios"].values())
    demo = load_config("demo").target
    assert report["config"]["repeats"] == 2
    assert report["config"]["raw_span"] == build_target(demo.name, **demo.options).raw_span(8, 2)
    assert {"platform", "cpus", "av"} <= set(report["machine"])
    assert main(["bench", "loader", "--config", "demo", "--list", str(data / "train.csv"), "--clips", "5"]) == 2
    assert capsys.readouterr().err.strip() == "motionmae bench: error: --clips 5 is not a multiple of --repeats 4"


def test_repeats_share_the_spans_stored_flow_and_get_the_flow_read_for_each(tiny_synthetic):
    """The samples of a repeated span resample the flow fields decoded once for the span; each
    sample's flow equals the flow read from the cache for its own crop box, and the first sample
    is the sample without repeats."""
    data, cache = tiny_synthetic
    config = load_config(
        "mme",
        [
            f"data.train={data / 'train.csv'}",
            f"data.cache={cache}",
            "data.short_side=64",
            "data.size=32",
            "data.frames=4",
            "data.stride=3",
            "data.repeats=3",
        ],
    )
    target = build_target(config.target.name, **config.target.options)
    ds = build_dataset(config, target)
    single = build_dataset(dataclasses.replace(config, data=dataclasses.replace(config.data, repeats=1)), target)
    item = ds.items[1]
    span = ds.read(item, sample_rng(config.run.seed, 1, 0))
    assert span.stored_flow is not None and len(span.stored_flow[0]) == len(ds.flows_read)
    for r in range(3):
        shared, box = ds.augment(item, span, repeat_rng(config.run.seed, 1, 0, r))
        plain_span = dataclasses.replace(span, stored_flow=None)
        alone, same_box = ds.augment(item, plain_span, repeat_rng(config.run.seed, 1, 0, r))
        assert box == same_box and torch.equal(shared["flow"], alone["flow"]) and shared["flow"].abs().sum() > 0
    first, plain = ds[(0, 1)][0], single[(0, 1)]
    assert all(torch.equal(first[k], plain[k]) for k in ("frames", "flow", "mask"))
