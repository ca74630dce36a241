"""WebDataset shards (`motionmae pack`, `motionmae.data.shards`) on the tiny synthetic set: what is packed, resuming
and splitting a pack, reading through the list's pipeline, damaged samples, exact epochs over ranks and workers."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.common.lists import read_list
from motionmae.common.tally import VideoTally
from motionmae.config import load_config
from motionmae.data.datasets import ClipSpec, TrainAugment
from motionmae.data.shards import (
    ShardIndex,
    ShardStream,
    buffer_order,
    clip_dataset,
    epoch_loader,
    pretrain_dataset,
    read_items,
    single_pass_loader,
)
from motionmae.io.cache import CacheParams, MotionCache
from motionmae.models.vit import VisionTransformer, token_grid
from motionmae.motion.flow import FlowParams
from motionmae.motion.masking import MaskGenerator
from motionmae.motion.targets import build_target
from motionmae.train.distributed import Distributed
from motionmae.train.finetune import finetune
from motionmae.train.pretrain import pretrain
from motionmae.train.probe import clip_features

SIZE = 5  # videos per shard: 24 training videos -> 5 shards, the last with 4; 12 validation videos -> 3


def pack_cli(source, cache, out, *extra) -> int:
    return main(
        [
            "pack",
            str(source),
            "--cache",
            str(cache),
            "--out",
            str(out),
            "--short-side",
            "64",
            "--shard-size",
            str(SIZE),
            "--quiet",
            *extra,
        ]
    )


def pattern(folder, name, shards) -> str:
    return f"{folder}/{name}-{{000000..{shards - 1:06d}}}.tar"


def tars(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.tar"))}


@pytest.fixture(scope="module")
def packed(tiny_synthetic, tmp_path_factory):
    """The training list (24 videos) and the validation list (12) packed in shards of 5."""
    data, cache = tiny_synthetic
    out = tmp_path_factory.mktemp("shards")
    assert pack_cli(data / "train.csv", cache, out) == 0
    assert pack_cli(data / "val.csv", cache, out) == 0
    return out


def data_config(tiny_synthetic, train, *extra):
    _, cache = tiny_synthetic
    return load_config(
        "demo",
        [
            f"data.train={train}",
            f"data.cache={cache}",
            "data.short_side=64",
            "data.frames=8",
            "data.stride=2",
            "data.workers=0",
            "data.shard_buffer=4",
            *extra,
        ],
    )


def dataset(config):
    d, m = config.data, config.model
    target = build_target(config.target.name, tubelet=m.tubelet, patch=m.patch, **config.target.options)
    masks = MaskGenerator(config.mask.kind, config.mask.ratio, token_grid(d.frames, d.size, m.tubelet, m.patch))
    return pretrain_dataset(read_items(d.train), d, target.raw_span(d.frames, d.stride), masks, seed=3)


# ---------------------------------------------------------------- pack


def test_pack_stores_the_files_and_cache_entries_as_they_are(tiny_synthetic, packed):
    data, cache_root = tiny_synthetic
    cache = MotionCache(cache_root, CacheParams(flow=FlowParams(compensation="none"), short_side=64))
    items = sorted(read_list(data / "train.csv"), key=lambda item: item.key)
    index = ShardIndex.open(pattern(packed, "train", 5))
    assert index.counts.tolist() == [5, 5, 5, 5, 4]
    assert [(i.key, i.label) for i in index] == [(i.key, i.label) for i in items]
    import webdataset  # the library's own reader sees our samples

    samples = list(webdataset.WebDataset(index.urls, shardshuffle=False))
    assert len(samples) == 24 and all({"video", "flow", "cls", "json"} <= set(s) for s in samples)
    for sample, item in zip(samples, items):
        meta = json.loads(sample["json"])
        assert sample["video"] == Path(item.path).read_bytes()
        assert sample["flow"] == cache.entry_path(item.key).read_bytes()
        assert (meta["key"], meta["label"], int(sample["cls"])) == (item.key, item.label, item.label)
        assert meta["num_frames"] == cache.info(item.key).num_frames and meta["cache"]["key"] == cache.params.key()
    report = json.loads((packed / "train-report.json").read_text())
    assert (report["read"], report["skipped"], report["written"], report["samples"]) == (24, 0, 5, 24)


def test_a_resumed_pack_keeps_finished_shards_and_ends_as_a_fresh_one(tiny_synthetic, packed, tmp_path):
    data, cache = tiny_synthetic
    lines = sorted((data / "train.csv").read_text().splitlines())
    (data / "first12.csv").write_text("".join(line + "\n" for line in lines[:12]))  # a run killed after 12 videos
    out = tmp_path / "out"
    assert pack_cli(data / "first12.csv", cache, out, "--name", "train") == 0
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")}
    assert sorted(before) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    (out / ".train-000003.tar.host-1.tmp").write_bytes(b"partial")  # what a killed run leaves
    assert pack_cli(data / "train.csv", cache, out) == 0
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.tar")}
    assert after["train-000000.tar"] == before["train-000000.tar"]  # finished: not rewritten
    assert after["train-000001.tar"] == before["train-000001.tar"]
    assert after["train-000002.tar"] != before["train-000002.tar"]  # held 2 of its 5 videos: rewritten
    fresh = {name: data for name, data in tars(packed).items() if name.startswith("train")}
    assert tars(out) == fresh  # the same bytes as one uninterrupted pack
    assert not list(out.glob(".*.tmp"))
    report = json.loads((out / "train-report.json").read_text())
    assert (report["kept"], report["written"], report["read"]) == (2, 3, 24)


def test_shard_option_splits_the_shards_between_runs(tiny_synthetic, packed, tmp_path):
    data, cache = tiny_synthetic
    for i in range(3):
        assert pack_cli(data / "train.csv", cache, tmp_path, "--shard", f"{i}/3") == 0
        assert sorted(tars(tmp_path)) == [f"train-{k:06d}.tar" for k in range(5) if k % 3 <= i]
        assert json.loads((tmp_path / f"train-report-{i}-of-3.json").read_text())["written"] == len(range(i, 5, 3))
    assert tars(tmp_path) == {name: data for name, data in tars(packed).items() if name.startswith("train")}


def test_videos_missing_from_the_cache_are_skipped_and_reported(tiny_synthetic, tmp_path, capsys):
    data, _ = tiny_synthetic
    names = ["grow/grow_00000.mp4", "shrink/shrink_00001.mp4", "grow/grow_00001.mp4"]
    for name in names:
        shutil.copy(data / "videos" / name, tmp_path / Path(name).name)
    (tmp_path / "list.csv").write_text("grow_00000.mp4 6\nshrink_00001.mp4 7\n")
    assert (
        main(
            [
                "prepare",
                str(tmp_path / "list.csv"),
                "--cache",
                str(tmp_path / "cache"),
                "--short-side",
                "64",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    (tmp_path / "list.csv").write_text("grow_00000.mp4 6\nshrink_00001.mp4 7\nnew.mp4 6\n")
    os.rename(tmp_path / "grow_00001.mp4", tmp_path / "new.mp4")  # never prepared
    assert pack_cli(tmp_path / "list.csv", tmp_path / "cache", tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "videos: 2 of 3 videos read, 1 skipped (not_in_cache 1)" in captured.out
    assert "SKIPPED" in captured.err and "new.mp4" in captured.err
    index = ShardIndex.open(tmp_path / "out" / "list-000000.tar")
    assert [item.key for item in index] == ["grow_00000.mp4", "shrink_00001.mp4"]
    assert (
        main(["pack", str(tmp_path / "list.csv"), "--cache", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")])
        == 1
    )  # no cache there (a failure): one line, no traceback
    assert "run `motionmae prepare" in capsys.readouterr().err


# ---------------------------------------------------------------- reading


def test_shard_samples_are_the_list_pipeline_samples(tiny_synthetic, packed):
    """The same pipeline, decoding from memory: a sample of the shards equals the list's sample of that video."""
    data, _ = tiny_synthetic
    config = data_config(tiny_synthetic, pattern(packed, "train", 5), "mask.kind=mgm", "mask.ratio=0.75")
    stream = dataset(config)
    assert isinstance(stream, ShardStream)
    files = dataset(dataclasses.replace(config, data=dataclasses.replace(config.data, train=str(data / "train.csv"))))
    files.items.sort(key=lambda item: item.key)  # positions of the shard set: sorted by key
    loader, sampler = epoch_loader(stream, 4, seed=3)
    sampler.set_epoch(1)
    batch = next(iter(loader))
    for j, position in enumerate(batch["video"].tolist()):
        expected = files[(1, position)]
        assert batch["key"][j] == expected["key"] == files.items[position].key
        for name in ("frames", "flow", "mask", "cuts"):
            assert torch.equal(batch[name][j], expected[name]), name
    spec = ClipSpec(frames=8, stride=2, size=32, short_side=32)
    views = next(iter(single_pass_loader(clip_dataset(read_items(pattern(packed, "val", 3)), spec, clips=2), 12)))
    lists = clip_dataset(sorted(read_list(data / "val.csv"), key=lambda item: item.key), spec, clips=2)
    assert views["ok"].all() and views["video"].tolist() == list(range(12))
    assert all(torch.equal(views["frames"][i], lists[i]["frames"]) for i in range(12))


def damage(path: Path, member: str) -> None:
    """Flip bytes inside one member of a tar, in place."""
    with tarfile.open(path) as tar:
        offset = tar.getmember(member).offset_data
    with open(path, "r+b") as f:
        f.seek(offset + 40)
        f.write(b"\xff\x00\xff\x00")


def test_damaged_samples_are_skipped_reported_and_replaced(tiny_synthetic, packed, tmp_path):
    for path in packed.glob("train-*"):
        shutil.copy(path, tmp_path)
    damage(tmp_path / "train-000002.tar", "000003.video")  # position 13
    whole = (tmp_path / "train-000003.tar").read_bytes()  # positions 15..19: cut inside sample 2
    with tarfile.open(tmp_path / "train-000003.tar") as tar:
        cut = tar.getmember("000002.video").offset_data + 100
    (tmp_path / "train-000003.tar").write_bytes(whole[:cut])
    index = ShardIndex.open(pattern(tmp_path, "train", 5))
    corrupt, lost = index[13].key, {index[p].key for p in (17, 18, 19)}
    config = data_config(tiny_synthetic, pattern(tmp_path, "train", 5))
    stream = dataset(config)
    loader, _ = epoch_loader(stream, 4, seed=0)
    tally, keys = VideoTally(len(index)), []
    for batch in loader:
        tally.update(batch)
        keys += batch["key"]
    counts = tally.to_dict()
    assert len(keys) == 24 and corrupt not in keys and not lost & set(keys)  # every slot filled by a good sample
    assert (counts["read"], counts["skipped_reasons"]) == (20, {"corrupt_sample": 1, "missing_sample": 3})
    reasons = {entry["path"].split(":")[-1]: entry["reason"] for entry in counts["skipped_videos"]}
    assert "do not match the checksum" in reasons[corrupt] and "could not be read" in reasons[lost.pop()]
    spec = ClipSpec(frames=8, stride=2, size=32, short_side=32)  # testing: counted as not read, never replaced
    tests = list(single_pass_loader(clip_dataset(index, spec), 8))
    ok = torch.cat([b["ok"] for b in tests])
    assert len(ok) == 24 and (~ok).nonzero().flatten().tolist() == [13, 17, 18, 19]


def test_features_from_shards_equal_features_from_the_list(tiny_synthetic, packed, tmp_path):
    data, _ = tiny_synthetic
    torch.manual_seed(0)
    encoder = VisionTransformer("tiny", 8, 32).eval()
    spec = ClipSpec(frames=8, stride=2, size=32, short_side=32)
    env = Distributed()
    runs = {}
    for name, source in (("list", data / "val.csv"), ("shards", pattern(packed, "val", 3))):
        result, _ = clip_features(
            encoder,
            clip_dataset(read_items(source), spec),
            env,
            tmp_path / f"{name}.pt",
            batch_size=5,
            workers=0,
            progress=False,
            desc=name,
        )
        runs[name] = {
            path.split(":")[-1].split(str(data) + "/")[-1]: f for path, f in zip(result["paths"], result["features"])
        }
    assert runs["list"].keys() == runs["shards"].keys()
    assert all(torch.allclose(runs["list"][k], runs["shards"][k], atol=1e-5) for k in runs["list"])


def test_finetune_trains_and_validates_on_shards(packed, tmp_path):
    config = load_config(
        "finetune-demo",
        [
            f"data.train={pattern(packed, 'train', 5)}",
            f"data.val={pattern(packed, 'val', 3)}",
            "data.short_side=32",
            "data.size=32",
            "data.frames=8",
            "data.workers=0",
            "optim.batch_size=8",
            "run.max_steps=2",
            "aug.repeats=2",
            "run.log_samples=true",
            f"run.out={tmp_path}",
        ],
        task="finetune",
    )
    result = finetune(config, progress=False)
    assert result.val["val_videos"]["read"] == 12 and result.steps == 2
    logged = [json.loads(line) for line in (tmp_path / "samples-rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2] and all(len(r["videos"]) == 8 for r in logged)


# ---------------------------------------------------------------- epochs over ranks and workers


def test_shuffle_buffer_order_is_a_permutation_that_stays_near_the_stream():
    order = buffer_order(1000, 16, np.random.default_rng(0))
    assert sorted(order) == list(range(1000)) and order != list(range(1000))
    assert all(item <= t + 15 for t, item in enumerate(order))  # never ahead of what a 16-buffer has read


@pytest.mark.parametrize("world,workers,batch", [(1, 1, 4), (2, 3, 2), (3, 2, 5)])
def test_every_sample_once_per_epoch_over_ranks_and_workers(packed, world, workers, batch):
    index = ShardIndex.open(pattern(packed, "train", 5))
    seen = []
    for rank in range(world):
        stream = clip_dataset(index, ClipSpec(), TrainAugment())
        stream.place(rank, world, batch)
        stream.set_epoch(4)
        for worker in range(workers):
            first, stop, done, _ = stream.share(worker, workers)
            assert (stop - first) % batch == 0 and done == 0
            seen += stream.sequence()[first:stop].tolist()
    assert len(seen) == len(set(seen)) == 24 // (batch * world) * batch * world


@pytest.mark.slow  # spawned loader workers
def test_sample_log_and_exact_resume_with_loader_workers(tiny_synthetic, packed, tmp_path):
    """Stopped after 3 steps (odd: the other worker's turn next) and resumed, the run reads what an
    uninterrupted one reads, batch by batch."""
    torch.set_num_threads(1)
    whole, split = tmp_path / "whole", tmp_path / "split"

    def run(out, steps, resume=None):
        config = data_config(
            tiny_synthetic,
            pattern(packed, "train", 5),
            "data.workers=2",
            "optim.batch_size=4",
            "optim.epochs=2",
            "run.log_samples=true",
            "run.log_every=1",
            f"run.out={out}",
            f"run.max_steps={steps}",
            "optim.warmup_epochs=1",
        )
        return pretrain(config, resume=resume)

    run(whole, 6)  # one epoch
    run(split, 3)
    run(split, 6, resume="auto")
    read = {out: (out / "samples-rank0.jsonl").read_text() for out in (whole, split)}
    assert read[split] == read[whole]
    records = [json.loads(line) for line in read[whole].splitlines()]
    epoch0 = [k for r in records if r["epoch"] == 0 for k in r["keys"]]
    assert len(epoch0) == len(set(epoch0)) == 24
    losses = [
        [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
        for out in (whole, split)
    ]
    assert len(losses[0]) == 6 and losses[0] == losses[1]


@pytest.mark.slow  # DDP
def test_ddp_two_processes_read_every_sample_once_per_epoch(tiny_synthetic, packed, tmp_path):
    data, cache = tiny_synthetic
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
            str(tmp_path),
            f"data.train={pattern(packed, 'train', 5)}",
            f"data.cache={cache}",
            "data.short_side=64",
            "data.frames=8",
            "data.stride=2",
            "data.workers=0",
            "data.shard_buffer=4",
            "optim.batch_size=3",
            "optim.epochs=2",
            "optim.warmup_epochs=1",
            "run.log_samples=true",
            "run.checkpoint_every=1000",
            f"run.out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"params-rank{r}.pt") for r in range(2))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    logs = [
        [json.loads(line) for line in (tmp_path / f"samples-rank{r}.jsonl").read_text().splitlines()] for r in range(2)
    ]
    assert [len(log) for log in logs] == [8, 8]  # 24 / (3 x 2) = 4 steps per epoch, 2 epochs
    keys = {item.key for item in read_list(data / "train.csv")}
    orders = []
    for epoch in range(2):
        per_rank = [[k for r in log if r["epoch"] == epoch for k in r["keys"]] for log in logs]
        assert all(len(part) == 12 for part in per_rank)
        seen = Counter(per_rank[0] + per_rank[1])
        assert set(seen) == keys and set(seen.values()) == {1}  # every sample exactly once per epoch
        orders.append(per_rank[0] + per_rank[1])
    assert orders[0] != orders[1]  # reshuffled
