"""The pretraining loader side by side: `motionmae bench loader` (or `python -m bench.loader`).

Compares the pretraining loader of a config in clips per CPU second (all threads of the
process) and per wall second, on the same real videos, the sides taking turns: the
loader with its speed-ups off (`data.fast_loader: false`, `data.repeats: 1`), a plain
PyAV decode-the-span loader (the peer), and the loader with them on (decoding the whole
span, then only what the target reads, then with repeated sampling).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

from bench.command import BenchError, command, parser
from bench.timing import machine, machine_line, threads, write_report
from motionmae.common.lists import ListError, read_list
from motionmae.config import ConfigError, load_config
from motionmae.data.datasets import FlowUnavailable, PretrainDataset, augment_frames, multiscale_crop
from motionmae.io.cache import CacheError
from motionmae.io.video import output_size
from motionmae.motion.targets import build_target
from motionmae.train.pretrain import build_dataset


class PlainSpanLoader:
    """The peer of `bench loader`: a plain PyAV decode-the-span loader, no targets.

    Per clip: seek to the keyframe before a random start, decode every frame of the
    `(T - 1) * s + 1` span with one decoder thread, convert its T input frames to RGB at the
    short side (`frame.to_ndarray`), and resize one MultiScaleCrop of them to `size`.
    """

    def __init__(self, paths: list[Path], data, seed: int = 0):
        self.paths, self.data, self.seed = paths, data, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> np.ndarray:
        """uint8 `(T, S, S, 3)` of video `index` (`key` = (epoch, index))."""
        epoch, index = key
        d, rng = self.data, np.random.default_rng((self.seed, epoch, index))
        span = (d.frames - 1) * d.stride + 1
        with av.open(str(self.paths[index])) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            rate, base = float(stream.average_rate or stream.guessed_rate), float(stream.time_base)
            origin = stream.start_time or 0
            start = int(rng.integers(max(1, stream.frames - span + 1)))
            wanted = set(range(start, start + span, d.stride))
            width, height = output_size(stream.codec_context.width, stream.codec_context.height, d.short_side)
            container.seek(origin + int(start / rate / base), stream=stream, backward=True)
            frames = []
            for frame in container.decode(stream):
                number = round((frame.pts - origin) * base * rate)
                if number in wanted:
                    frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                if number >= start + span - 1:
                    break
        frames = np.stack(frames)
        return augment_frames(frames, multiscale_crop(height, width, d.size, d.scales, d.flip, rng))


def loader_sides(config, repeats: int) -> dict:
    """The data sets `bench loader` compares: (epoch, index) -> one clip (or a list of clips)."""
    t = config.target
    target = build_target(t.name, tubelet=config.model.tubelet, patch=config.model.patch, **t.options)

    def with_data(**changes):
        return dataclasses.replace(config, data=dataclasses.replace(config.data, **changes))

    single = build_dataset(with_data(fast_loader=True, repeats=1), target)
    whole_span = PretrainDataset(
        read_list(config.data.train), single.data, single.raw_span, single.masks, config.run.seed, single.needs_flow
    )  # no `reads`: every frame and flow field
    return {
        "before": build_dataset(with_data(fast_loader=False, repeats=1), target),
        "peer": PlainSpanLoader([item.path for item in read_list(config.data.train)], config.data, config.run.seed),
        "new_whole_span": whole_span,
        "new_single": single,
        "new": build_dataset(with_data(fast_loader=True, repeats=repeats), target),
    }


def draw_clips(dataset, clips: int, epoch: int, per_draw: int = 1) -> tuple[float, float]:
    """CPU and wall seconds of drawing `clips` clips, `per_draw` at a time, video i % len for draw i."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(clips // per_draw):
        dataset[(epoch, i % len(dataset))]
    return time.process_time() - cpu, time.perf_counter() - wall


LOADER_LABELS = {
    "before": "before (speed-ups off)",
    "peer": "plain PyAV span (peer)",
    "new_whole_span": "new decode of the whole span",
    "new_single": "new, repeats 1",
    "new": "new",
}


def run_loader_bench(
    config_name: str, list_path, out, cache=None, clips: int = 24, repeats: int = 4, rounds: int = 3, overrides=()
) -> dict:
    """Clips/s per core of the pretraining loader before this change, a plain PyAV peer and the new one
    (with `repeats`; to separate the effects also with 1, and decoding the whole span rather than what
    the target reads), side by side on the same videos, the sides taking turns for `rounds` rounds;
    prints and writes `out`/loader.json. Single-threaded (torch, OpenCV and our decoder); per core =
    clips per CPU second of this process (all its threads)."""
    if clips % repeats:
        raise ValueError(f"--clips {clips} is not a multiple of --repeats {repeats}")
    settings = [f"data.train={list_path}"] + ([f"data.cache={cache}"] if cache else []) + list(overrides)
    config = load_config(config_name, settings)
    d = config.data
    info = machine()
    with threads(1):
        sides = loader_sides(config, repeats)
        new = sides["new"]
        videos = [item.path.name for item in read_list(d.train)]
        setup = {
            "preset": config_name,
            "list": str(list_path),
            "videos": videos,
            "cache": d.cache,
            "frames": d.frames,
            "stride": d.stride,
            "raw_span": new.raw_span,
            "short_side": d.short_side,
            "size": d.size,
            "target": config.target.name,
            "mask": f"{config.mask.kind} {config.mask.ratio}",
            "frames_read": len(new.frames_read),
            "flows_read": len(new.flows_read) if new.needs_flow else 0,
            "repeats": repeats,
            "clips": clips,
            "rounds": rounds,
            "threads": 1,
        }
        print("motionmae bench loader: clips/s per core of the pretraining loader, side by side in one run")
        print(f"machine: {machine_line(info)}")
        print(
            f"config: {config_name}: {d.frames} frames at stride {d.stride} ({new.raw_span} raw, the target reads "
            f"{setup['frames_read']} frames and {setup['flows_read']} flow fields), short side {d.short_side}, "
            f"crop {d.size}, {setup['target']} target, {setup['mask']} mask; videos {', '.join(videos)}; "
            f"{clips} clips per side per round, {rounds} rounds taking turns; one thread"
        )
        for dataset in sides.values():  # warm-up: opens caches and codecs once
            dataset[(0, 0)]
        runs = {name: [] for name in sides}
        for r in range(rounds):
            for name, dataset in sides.items():
                per_draw = repeats if name == "new" else 1
                runs[name].append(draw_clips(dataset, clips, 1 + r, per_draw))
    figures = {}
    for name, times in runs.items():
        per_core = [clips / cpu for cpu, _ in times]
        figures[name] = {
            "clips_per_s_per_core": statistics.median(per_core),
            "clips_per_s_wall": statistics.median(clips / wall for _, wall in times),
            "rounds": per_core,
        }
        print(
            f"  {LOADER_LABELS[name]:32s} {figures[name]['clips_per_s_per_core']:6.2f} clips/s per core  "
            f"({figures[name]['clips_per_s_wall']:.2f} wall)  rounds: {', '.join(f'{x:.2f}' for x in per_core)}"
        )
    rate = {name: f["clips_per_s_per_core"] for name, f in figures.items()}
    wall = {name: f["clips_per_s_wall"] for name, f in figures.items()}
    ratios = {
        "new_vs_before": rate["new"] / rate["before"],
        "new_vs_peer": rate["new"] / rate["peer"],
        "new_vs_peer_wall": wall["new"] / wall["peer"],
        "new_whole_span_vs_before": rate["new_whole_span"] / rate["before"],
        "new_single_vs_before": rate["new_single"] / rate["before"],
        "before_vs_peer": rate["before"] / rate["peer"],
    }
    print(
        f"  ratio: new / before {ratios['new_vs_before']:.2f}x, new / peer {ratios['new_vs_peer']:.2f}x "
        f"(wall clock {ratios['new_vs_peer_wall']:.2f}x); before / peer {ratios['before_vs_peer']:.2f}x"
    )
    print(
        f"  ratio, step by step over before: the new decode {ratios['new_whole_span_vs_before']:.2f}x, + only "
        f"what the target reads {ratios['new_single_vs_before']:.2f}x, + {repeats} repeats "
        f"{ratios['new_vs_before']:.2f}x"
    )
    report = {"machine": info, "config": setup, "sides": figures, "ratios": ratios}
    print(f"wrote {write_report(out, 'loader.json', report)}")
    return report


@command
def main(argv: list[str] | None = None) -> int:
    p = parser(
        "loader",
        "Clips/s per core of the pretraining loader with and without its speed-ups beside a plain PyAV loader.",
        """
        motionmae prepare data/real/list.txt --cache cache/real       # the motion cache at 256 px
        motionmae bench loader --config mme-vitb-k400 --list data/real/list.txt --cache cache/real
        motionmae bench loader --config videomae --list data/real/list.txt --repeats 2 --out runs/bench-loader-pixel
        Sides, on the same videos and taking turns: the loader with its speed-ups off
        (data.fast_loader=false, data.repeats=1), a plain PyAV decode-the-span loader (no targets),
        the new loader decoding the whole span, decoding what the target reads, and with --repeats.
        One thread; per core = clips per CPU second. Prints the machine, the config and the
        ratios; writes OUT/loader.json.
        """,
    )
    p.add_argument("--config", required=True, metavar="NAME", help="pretraining preset or config file")
    p.add_argument("--list", required=True, metavar="LIST", help="videos: list file, folder or one video")
    p.add_argument("--cache", default=None, metavar="DIR", help="motion cache root (default: the config's)")
    p.add_argument("--clips", type=int, default=24, metavar="N", help="clips per side per round (default: 24)")
    p.add_argument(
        "--repeats",
        type=int,
        default=4,
        metavar="N",
        help="data.repeats of the new side: clips per decoded span (default: 4)",
    )
    p.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds, the sides taking turns (default: 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument(
        "--out", default="runs/bench-loader", metavar="DIR", help="folder of loader.json (default: runs/bench-loader)"
    )
    args = p.parse_args(argv)
    for flag, value in (("--clips", args.clips), ("--repeats", args.repeats), ("--rounds", args.rounds)):
        if value < 1:
            raise BenchError(f"{flag} {value}: need at least 1")
    if args.clips % args.repeats:
        raise BenchError(f"--clips {args.clips} is not a multiple of --repeats {args.repeats}")
    try:
        run_loader_bench(
            args.config,
            args.list,
            args.out,
            cache=args.cache,
            clips=args.clips,
            repeats=args.repeats,
            rounds=args.rounds,
            overrides=args.set,
        )
    except (ConfigError, ListError, FlowUnavailable, CacheError) as err:
        raise BenchError(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
