"""Commands on videos and data: `info`, `make-synthetic`, `prepare` (the motion cache), `pack` (shards)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from motionmae.cli.base import UserError, add_command, parse_shard
from motionmae.io.video import VideoError
from motionmae.motion.cuts import CutParams


def cmd_info(args) -> int:
    """Print metadata and motion-vector coverage per file; exit 1 if any failed."""
    from motionmae.io.video import motion_vector_stats, probe

    failed = 0
    for path in args.videos:
        try:
            info = probe(path)
            stats = motion_vector_stats(path, short_side=args.short_side) if args.motion else None
        except VideoError as err:
            print(f"ERROR {err}")
            failed += 1
            continue
        line = (
            f"{path}: {info.num_frames} frames, {info.fps:.3f} fps, {info.width}x{info.height}, "
            f"codec {info.codec}, motion vectors {'yes' if info.has_motion_vectors else 'no'}"
        )
        if info.container_frames and info.container_frames != info.num_frames:
            line += f" (the container claims {info.container_frames})"
        if info.truncated:
            line += " (TRUNCATED: frame count is what decodes)"
        if stats is not None:
            line += f"; frames with vectors {stats['coverage']:.1%}, mean |mv| {stats['mean_magnitude']:.2f} px/frame"
        print(line)
    if failed:
        print(f"{failed} of {len(args.videos)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_make_synthetic(args) -> int:
    """Write the embedded motion-defined data set (resumes an interrupted run)."""
    from motionmae.data.synthetic import CLASSES, make_dataset

    out = make_dataset(
        args.out,
        videos_per_class=args.videos_per_class,
        size=args.size,
        frames=args.frames,
        fps=args.fps,
        seed=args.seed,
        camera_motion=args.camera_motion,
        workers=args.workers,
    )
    total = len(CLASSES) * args.videos_per_class
    print(f"wrote {out}: {total} videos of {len(CLASSES)} classes, lists train.csv and val.csv, classes.txt")
    return 0


def cmd_prepare(args) -> int:
    """Store the compensated flow of every video in the motion cache; exit 1 if any failed."""
    from motionmae.io.cache import CacheParams, MotionCache
    from motionmae.io.prepare import list_videos, prepare, shard
    from motionmae.motion.flow import FlowParams

    index, count = parse_shard(args.shard)
    videos = list_videos(args.source)
    mine = shard(videos, index, count)
    params = CacheParams(
        flow=FlowParams(method=args.method, preset=args.preset, compensation=args.compensation),
        short_side=args.short_side or None,
        stride=args.stride,
        codec=args.codec,
        quality=args.quality,
        cuts=CutParams(ratio=args.cut_ratio),
    )
    cache = MotionCache(args.cache, params)
    report_name = "report.json" if count == 1 else f"report-{index}-of-{count}.json"
    print(f"motion cache {cache.dir}: shard {index}/{count}, {len(mine)} of {len(videos)} videos")
    report = prepare(mine, cache, workers=max(1, args.workers), progress=not args.quiet, report_name=report_name)
    print(
        f"{report.done} extracted ({report.frames} frames in {report.seconds:.1f} s), "
        f"{report.cached} already cached, {len(report.failed)} failed; report {cache.dir / report_name}"
    )
    print(f"videos: {report.videos.summary()}")
    for note in report.notes:
        print(f"note: {note['path']}: {note['note']}")
    for failure in report.failed:
        print(f"FAILED {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_pack(args) -> int:
    """Write WebDataset shards of a list's videos and their motion-cache entries; exit 1 if any was skipped."""
    from types import SimpleNamespace

    from motionmae.common.lists import read_list
    from motionmae.data.datasets import open_cache
    from motionmae.data.shards import pack
    from motionmae.errors import MotionMAEError

    index, count = parse_shard(args.shard)
    if args.shard_size < 1:
        raise UserError(f"--shard-size {args.shard_size}: need at least 1 video per shard")
    name = args.name or Path(args.source.rstrip("/")).stem
    if not name or "/" in name:
        raise UserError(f"--name {name!r}: need a file name without '/' (shards are NAME-000000.tar)")
    items = read_list(args.source)
    cache = open_cache(SimpleNamespace(cache=args.cache, short_side=args.short_side or None))
    if not (cache.dir / "params.json").is_file():
        raise MotionMAEError(
            f"{args.cache}: no motion cache made at short side {args.short_side}; run "
            f"`motionmae prepare {args.source} --cache {args.cache}` first (or give --short-side)"
        )
    report_name = "report.json" if count == 1 else f"report-{index}-of-{count}.json"
    shards = -(-len({item.key for item in items}) // args.shard_size)
    print(
        f"packing {args.source} with the motion cache {cache.dir} into {args.out}/{name}-*.tar: "
        f"shard {index}/{count}, {len(range(index, shards, count))} of {shards} shards of {args.shard_size} videos"
    )
    report = pack(
        items, cache, args.out, args.shard_size, name, index, count, progress=not args.quiet, report_name=report_name
    )
    rate = report.bytes / 1e6 / max(report.seconds, 1e-9)
    print(
        f"{report.written} shards written ({report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s, {rate:.0f} MB/s), "
        f"{report.kept} already finished; {report.samples} samples"
    )
    print(f"report: {Path(args.out) / f'{name}-{report_name}'}")
    print(f"videos: {report.videos.summary()}")
    print(f"train on them with: --set 'data.train={Path(args.out) / name}-{{000000..{shards - 1:06d}}}.tar'")
    for failure in report.videos.to_dict()["skipped_videos"]:
        print(f"SKIPPED {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 0 if report.ok else 1


def add_commands(sub) -> None:
    """Add this group's sub-commands to the `motionmae` parser."""
    p = add_command(
        sub,
        "info",
        "Print video metadata and codec motion-vector coverage.",
        """
        motionmae info clip.mp4
        motionmae info videos/*.mp4 --no-motion     # metadata only, faster
        """,
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument(
        "--no-motion", dest="motion", action="store_false", help="skip decoding motion vectors (metadata only)"
    )
    p.add_argument("--short-side", type=int, default=None, help="measure vectors at this short side (pixels)")
    p.set_defaults(func=cmd_info)

    p = add_command(
        sub,
        "make-synthetic",
        "Write the embedded data set: 12 classes defined only by motion.",
        """
        motionmae make-synthetic data/synthetic                      # 1,200 videos, 32 px x 24 frames (the demo's)
        motionmae make-synthetic data/small --videos-per-class 10 --size 32 --frames 16
        motionmae make-synthetic data/cam --camera-motion mixed      # pan / zoom / still camera
        """,
    )
    p.add_argument("out", metavar="OUT", help="output folder (created; an interrupted run resumes)")
    p.add_argument("--videos-per-class", type=int, default=100, metavar="N", help="videos per class (default: 100)")
    p.add_argument("--size", type=int, default=32, help="frame width and height in pixels (default: 32)")
    p.add_argument("--frames", type=int, default=24, help="frames per video (default: 24)")
    p.add_argument("--fps", type=int, default=25, help="frame rate written to the files (default: 25)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--camera-motion",
        choices=["none", "pan", "zoom", "mixed"],
        default="none",
        help="global camera motion of every video, or a random one each (default: none)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes writing videos (default: all CPUs)",
    )
    p.set_defaults(func=cmd_make_synthetic)

    p = add_command(
        sub,
        "prepare",
        "Extract camera-compensated optical flow of videos into the motion cache.",
        """
        motionmae prepare data/synthetic/train.csv --cache cache/motion
        motionmae prepare videos/ --cache cache/motion --workers 8          # folder, searched recursively
        motionmae prepare k400/train.csv --cache /scratch/motion --shard $SLURM_ARRAY_TASK_ID/16
        A killed run resumes where it stopped; failed videos are listed in REPORT.json
        in the cache folder and make the exit code 1. A file whose container claims more
        frames than decode is stored with the frames that decode (a note in the report).
        Shot cuts are found on the way and stored with each video: trajectories across
        them are left out of the loss.
        """,
    )
    p.add_argument(
        "source",
        metavar="LIST_OR_DIR",
        help="list file (`path [label]` lines, relative to its folder), folder, or one video",
    )
    p.add_argument("--cache", required=True, metavar="DIR", help="motion cache root")
    p.add_argument(
        "--short-side",
        type=int,
        default=256,
        help="decode with this short side, pixels; 0 keeps the source size (default: 256)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="processes extracting videos (default: all CPUs)",
    )
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="i/n",
        help="process only every n-th video starting at i (0-based) of the sorted list (default: 0/1)",
    )
    p.add_argument("--method", choices=["dis", "farneback"], default="dis", help="flow algorithm (default: dis)")
    p.add_argument(
        "--preset",
        choices=["ultrafast", "balanced", "fast", "medium"],
        default="balanced",
        help="DIS preset (default: balanced)",
    )
    p.add_argument(
        "--compensation",
        choices=["flow", "features", "none"],
        default="flow",
        help="camera homography from flow correspondences, from tracked corners, or off (default: flow)",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=4,
        help="store the flow on a grid this many times coarser than the frames (default: 4)",
    )
    p.add_argument(
        "--codec",
        choices=["jpeg", "png"],
        default="jpeg",
        help="field encoding: jpeg (compact, lossy) or png (lossless) (default: jpeg)",
    )
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default: 90)")
    p.add_argument(
        "--cut-ratio",
        type=float,
        default=CutParams.ratio,
        metavar="R",
        help="a frame pair is a shot cut when its warp residual is R times the local median "
        f"(motionmae.motion.cuts); 0 turns detection off (default: {CutParams.ratio})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = add_command(
        sub,
        "pack",
        "Write WebDataset tar shards: videos, their motion-cache entries, labels.",
        """
        motionmae pack k400/train.csv --cache cache/motion --out shards/ --shard-size 256
        motionmae pack k400/train.csv --cache /scratch/motion --out /data/shards --shard $SLURM_ARRAY_TASK_ID/16
        motionmae pretrain --config mme --set 'data.train=shards/train-{000000..000999}.tar'
        motionmae pretrain --config mme --set 'data.train=pipe:curl -s https://host/train-{000000..000999}.tar'
        Shard k holds videos k*N .. (k+1)*N - 1 of the list sorted by key (NAME-00000k.tar, plus its
        sidecar NAME-00000k.json with the sample count that readers need: copy both). Per video:
        the file's bytes as they are, its motion-cache entry (flow, shot cuts), label, metadata with
        sha256 checksums checked when read. A killed run resumes: finished shards are kept as they are,
        partial ones never appear. Videos not in the cache are skipped, listed in the report
        (OUT/NAME-report.json) and make the exit code 1: run `prepare` on the list first.
        """,
    )
    p.add_argument(
        "source",
        metavar="LIST_OR_DIR",
        help="list file (`path [label]` lines, relative to its folder), folder, or one video",
    )
    p.add_argument("--cache", required=True, metavar="DIR", help="motion cache root that `prepare` filled")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the shards (created)")
    p.add_argument("--shard-size", type=int, default=256, metavar="N", help="videos per shard (default: 256)")
    p.add_argument(
        "--name",
        default=None,
        help="shard file names: NAME-000000.tar, ... (default: the list file's name: train.csv -> train)",
    )
    p.add_argument(
        "--short-side",
        type=int,
        default=256,
        help="the cache made at this short side, pixels, when DIR holds several (default: 256)",
    )
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="i/n",
        help="write only every n-th shard starting at i (0-based) (default: 0/1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pack)
