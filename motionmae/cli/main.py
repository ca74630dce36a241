"""The `motionmae` command line: one sub-command per job.

Each command is a function `cmd_<name>(args) -> int` plus an entry in
`build_parser`. User mistakes raise `UserError` (or a `VideoError`) and are
printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from motionmae.config import preset_names
from motionmae.io.video import VideoError
from motionmae.motion.cuts import CutParams


class UserError(Exception):
    """A mistake in the command line or its inputs; printed as one line."""


def _main_rank() -> bool:
    """False in the non-zero ranks of a torchrun job: only rank 0 prints the summary."""
    return os.environ.get("RANK", "0") == "0"


def _command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """Add a sub-command whose --help ends with usage examples."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


# ---------------------------------------------------------------- info


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
            line += (
                f"; frames with vectors {stats['coverage']:.1%}, "
                f"mean |mv| {stats['mean_magnitude']:.2f} px/frame"
            )
        print(line)
    if failed:
        print(f"{failed} of {len(args.videos)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    """The main job end to end on the embedded synthetic data set."""
    from motionmae.common.lists import ListError
    from motionmae.config import ConfigError
    from motionmae.data.datasets import FlowUnavailable
    from motionmae.data.synthetic import SyntheticError
    from motionmae.demo import run_demo
    from motionmae.io.cache import CacheError
    from motionmae.models.checkpoints import CheckpointError
    from motionmae.train.pretrain import TrainingDiverged

    try:
        summary = run_demo(args.config, args.set, args.workers, args.seed)
    except (CacheError, CheckpointError, ConfigError, FlowUnavailable, ListError, SyntheticError,
            TrainingDiverged) as err:
        raise UserError(str(err)) from None
    print(f"\nlinear-probe top-1 {summary['top1']:.1%} (top-5 {summary['top5']:.1%}; chance {summary['chance']:.1%})")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"metrics:    {summary['metrics']}")
    print(f"figure:     {summary['figure']}")
    return 0


# ---------------------------------------------------------------- visualize-masks


def _crop_to_patches(clip, patch: int):
    """Centre-crop a clip's frames and motion field to whole patches, cut on the 8-px vector grid."""
    import dataclasses

    h, w = clip.frames.shape[1:3]
    ch, cw = h // patch * patch, w // patch * patch
    if not ch or not cw:
        raise UserError(f"frames of {w}x{h} px hold no {patch}x{patch} patch")
    top, left = (h - ch) // 2 // 8 * 8, (w - cw) // 2 // 8 * 8
    motion = clip.motion[:, top // 8:-(-(top + ch) // 8), left // 8:-(-(left + cw) // 8)]
    return dataclasses.replace(clip, frames=clip.frames[:, top:top + ch, left:left + cw], motion=motion)


def cmd_visualize_masks(args) -> int:
    """Draw one clip's mask over its frames beside the motion magnitude (MGM's Figure 5)."""
    import numpy as np

    from motionmae.evaluation.visualize import mask_figure, save_png
    from motionmae.io.video import VideoReader
    from motionmae.motion.masking import MaskGenerator, guidance

    if args.frames % args.tubelet:
        raise UserError(f"--frames {args.frames} is not a multiple of --tubelet {args.tubelet}")
    if args.sparse and args.mask not in ("smm", "mgm"):
        raise UserError(f"--sparse applies to smm and mgm masks, not {args.mask}")
    with VideoReader(args.video, short_side=args.short_side) as reader:
        indices = args.start + args.stride * np.arange(args.frames)
        if indices[-1] >= len(reader):
            raise UserError(f"{args.video}: has {len(reader)} frames, the clip needs frame {indices[-1]} "
                            f"(--start {args.start}, --frames {args.frames}, --stride {args.stride})")
        clip = _crop_to_patches(reader.read(indices, motion=True), args.patch)
    grid = (args.frames // args.tubelet, clip.frames.shape[1] // args.patch, clip.frames.shape[2] // args.patch)
    generator = MaskGenerator(args.mask, args.ratio, grid, prefer=args.guidance,
                              options={"sparse": True} if args.sparse else {})
    magnitude, source = guidance(clip, grid, prefer=args.guidance)
    mask = generator(np.random.default_rng(args.seed), magnitude).reshape(grid)
    name = f"{args.mask}{' sparse' if args.sparse else ''}"
    title = (f"{args.video.split('/')[-1]}  {name} ratio {generator.ratio:g}: {int(mask.sum())}/{mask.size} "
             f"tokens masked, motion from {source}")
    save_png(args.out, mask_figure(clip.frames, mask, magnitude, title, (args.patch, args.patch)))
    print(f"wrote {args.out}: {name} ratio {generator.ratio:g}, grid {grid}, {int(mask.sum())}/{mask.size} masked; "
          f"motion from {source} ({int(clip.has_motion.sum())}/{len(indices)} frames carry codec vectors)")
    return 0


# ---------------------------------------------------------------- visualize


def cmd_visualize(args) -> int:
    """Draw what a pretraining checkpoint predicts on one clip (MME's Figure 4, or a pixel reconstruction)."""
    from motionmae.data.datasets import FlowUnavailable
    from motionmae.evaluation.visualize import VisualizeError, visualize_checkpoint
    from motionmae.io.cache import CacheError
    from motionmae.models.checkpoints import CheckpointError

    if args.mask_ratio is not None and not 0 < args.mask_ratio < 1:
        raise UserError(f"--mask-ratio {args.mask_ratio}: expected a number between 0 and 1")
    if args.rows < 1:
        raise UserError(f"--rows {args.rows}: need at least 1")
    try:
        result = visualize_checkpoint(args.checkpoint, args.video, args.out, args.start, args.seed, args.mask_ratio,
                                      args.rows)
    except (CacheError, CheckpointError, FlowUnavailable, VisualizeError, OSError) as err:
        raise UserError(str(err)) from None
    print(f"wrote {args.out}: {result.target} target, frames {result.start}..{result.start + len(result.frames) - 1}, "
          f"{int(result.mask.sum())}/{result.mask.size} tokens masked")
    return 0


# ---------------------------------------------------------------- make-synthetic


def cmd_make_synthetic(args) -> int:
    """Write the embedded motion-defined data set (resumes an interrupted run)."""
    from motionmae.data.synthetic import CLASSES, SyntheticError, make_dataset

    try:
        out = make_dataset(args.out, videos_per_class=args.videos_per_class, size=args.size,
                           frames=args.frames, fps=args.fps, seed=args.seed,
                           camera_motion=args.camera_motion, workers=args.workers)
    except SyntheticError as err:
        raise UserError(str(err)) from None
    total = len(CLASSES) * args.videos_per_class
    print(f"wrote {out}: {total} videos of {len(CLASSES)} classes, lists train.csv and val.csv, classes.txt")
    return 0


# ---------------------------------------------------------------- prepare


def _parse_shard(text: str) -> tuple[int, int]:
    """"i/n" with 0 <= i < n (0-based, like SLURM_ARRAY_TASK_ID with --array=0-(n-1))."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return index, count


def cmd_prepare(args) -> int:
    """Store the compensated flow of every video in the motion cache; exit 1 if any failed."""
    from motionmae.common.lists import ListError
    from motionmae.io.cache import CacheParams, MotionCache, list_videos, prepare, shard
    from motionmae.motion.flow import FlowParams

    index, count = _parse_shard(args.shard)
    try:
        videos = list_videos(args.source)
    except ListError as err:
        raise UserError(str(err)) from None
    except UnicodeDecodeError:
        raise UserError(f"{args.source}: not a list file (binary content), folder or video") from None
    mine = shard(videos, index, count)
    params = CacheParams(
        flow=FlowParams(method=args.method, preset=args.preset, compensation=args.compensation),
        short_side=args.short_side or None, stride=args.stride, codec=args.codec, quality=args.quality,
        cuts=CutParams(ratio=args.cut_ratio),
    )
    cache = MotionCache(args.cache, params)
    report_name = "report.json" if count == 1 else f"report-{index}-of-{count}.json"
    print(f"motion cache {cache.dir}: shard {index}/{count}, {len(mine)} of {len(videos)} videos")
    report = prepare(mine, cache, workers=max(1, args.workers), progress=not args.quiet, report_name=report_name)
    print(f"{report.done} extracted ({report.frames} frames in {report.seconds:.1f} s), "
          f"{report.cached} already cached, {len(report.failed)} failed; report {cache.dir / report_name}")
    print(f"videos: {report.videos.summary()}")
    for note in report.notes:
        print(f"note: {note['path']}: {note['note']}")
    for failure in report.failed:
        print(f"FAILED {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 0 if report.ok else 1


# ---------------------------------------------------------------- pack


def cmd_pack(args) -> int:
    """Write WebDataset shards of a list's videos and their motion-cache entries; exit 1 if any was skipped."""
    from types import SimpleNamespace

    from motionmae.common.lists import ListError, read_list
    from motionmae.data.datasets import FlowUnavailable, open_cache
    from motionmae.data.shards import pack
    from motionmae.io.cache import CacheError

    index, count = _parse_shard(args.shard)
    if args.shard_size < 1:
        raise UserError(f"--shard-size {args.shard_size}: need at least 1 video per shard")
    name = args.name or Path(args.source.rstrip("/")).stem
    if not name or "/" in name:
        raise UserError(f"--name {name!r}: need a file name without '/' (shards are NAME-000000.tar)")
    try:
        items = read_list(args.source)
        cache = open_cache(SimpleNamespace(cache=args.cache, short_side=args.short_side or None))
    except (ListError, FlowUnavailable, CacheError) as err:
        raise UserError(str(err)) from None
    except UnicodeDecodeError:
        raise UserError(f"{args.source}: not a list file (binary content), folder or video") from None
    if not (cache.dir / "params.json").is_file():
        raise UserError(f"{args.cache}: no motion cache made at short side {args.short_side}; run `motionmae prepare "
                        f"{args.source} --cache {args.cache}` first (or give --short-side)")
    report_name = "report.json" if count == 1 else f"report-{index}-of-{count}.json"
    shards = -(-len({item.key for item in items}) // args.shard_size)
    print(f"packing {args.source} with the motion cache {cache.dir} into {args.out}/{name}-*.tar: "
          f"shard {index}/{count}, {len(range(index, shards, count))} of {shards} shards of {args.shard_size} videos")
    report = pack(items, cache, args.out, args.shard_size, name, index, count, progress=not args.quiet,
                  report_name=report_name)
    rate = report.bytes / 1e6 / max(report.seconds, 1e-9)
    print(f"{report.written} shards written ({report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s, {rate:.0f} MB/s), "
          f"{report.kept} already finished; {report.samples} samples")
    print(f"report: {Path(args.out) / f'{name}-{report_name}'}")
    print(f"videos: {report.videos.summary()}")
    print(f"train on them with: --set 'data.train={Path(args.out) / name}-{{000000..{shards - 1:06d}}}.tar'")
    for failure in report.videos.to_dict()["skipped_videos"]:
        print(f"SKIPPED {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 0 if report.ok else 1


# ---------------------------------------------------------------- pretrain


def cmd_pretrain(args) -> int:
    """Pretrain a video ViT per a config preset; resumable."""
    from motionmae.common.lists import ListError
    from motionmae.config import ConfigError, load_config
    from motionmae.data.datasets import FlowUnavailable
    from motionmae.io.cache import CacheError
    from motionmae.models.checkpoints import CheckpointError
    from motionmae.train.pretrain import TrainingDiverged, pretrain

    try:
        config = load_config(args.config, args.set)
        result = pretrain(config, resume=args.resume)
    except (CacheError, ConfigError, FlowUnavailable, ListError, CheckpointError, TrainingDiverged) as err:
        raise UserError(str(err)) from None
    if _main_rank():
        _videos(result.videos.to_dict(), "training ")
        print(f"checkpoint: {result.checkpoint}")
        print(f"metrics:    {result.checkpoint.parent / 'metrics.jsonl'}")
    return 0


# ---------------------------------------------------------------- convert


def cmd_convert(args) -> int:
    """Convert a checkpoint between our layout, official VideoMAE / MME `.pth` files and Hugging Face."""
    from motionmae.models.checkpoints import CheckpointError
    from motionmae.models.interop import export_hf, model_from_checkpoint, read_checkpoint, save_motionmae
    from motionmae.models.vit import PretrainModel

    safetensors = args.out.endswith(".safetensors")
    if args.to == "safetensors" and not safetensors:
        raise UserError(f"--to safetensors: OUT {args.out} must end in .safetensors (loaders go by the suffix)")
    try:
        checkpoint = read_checkpoint(args.source)
        model, loaded = model_from_checkpoint(checkpoint, frames=args.frames, img_size=args.size)
        to = args.to or ("safetensors" if safetensors else "motionmae" if loaded.layout.startswith("Hugging Face")
                         else "hf")
        print(loaded)
        if to == "hf":
            architecture = export_hf(model, args.out)["architectures"][0]
            note = (" (encoder only: Hugging Face has no decoder for this target)"
                    if isinstance(model, PretrainModel) and architecture == "VideoMAEModel" else "")
            print(f"wrote {args.out}: Hugging Face {architecture}{note}")
        else:
            out = save_motionmae(model, args.out, args.source, checkpoint, safetensors=to == "safetensors")
            print(f"wrote {out}: motionmae {type(model).__name__}{' (safetensors)' if to == 'safetensors' else ''}")
    except (CheckpointError, OSError, ValueError) as err:  # ValueError: --frames / --size off the token grid
        raise UserError(str(err)) from None
    return 0


def cmd_upgrade_checkpoint(args) -> int:
    """Re-save a pretraining checkpoint of motionmae 0.1 in the format that loads without unpickling code."""
    from motionmae.models.checkpoints import CheckpointError, upgrade

    try:
        out = upgrade(args.checkpoint, args.out)
    except (CheckpointError, OSError) as err:
        raise UserError(str(err)) from None
    print(f"wrote {out}: RNG state stored as plain values; it loads safely and resumes as before")
    return 0


# ---------------------------------------------------------------- linear-probe, finetune, evaluate


def _views(text: str, flag: str) -> tuple[int, int]:
    """"CxS" -> (C temporal clips, S spatial crops)."""
    try:
        clips, crops = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected CLIPSxCROPS, e.g. 2x3") from None
    if clips < 1 or crops < 1:
        raise UserError(f"{flag} {text}: need at least 1 clip and 1 crop")
    return clips, crops


def _videos(counts: dict, what: str) -> None:
    """Print a `VideoTally.to_dict()`: one summary line, and the first skipped video on stderr."""
    from motionmae.common.tally import describe

    print(f"{what}videos: {describe(counts)}")
    if counts["skipped"]:
        first = counts["skipped_videos"][0]
        print(f"{counts['skipped']} {what}video(s) could not be read and were skipped "
              f"(first: {first['path']}: {first['reason']})", file=sys.stderr)


def cmd_linear_probe(args) -> int:
    """Train a linear classifier on frozen, cached features of a checkpoint's encoder."""
    from motionmae.common.lists import ListError
    from motionmae.evaluation.evaluate import linear_probe
    from motionmae.models.checkpoints import CheckpointError

    try:
        result = linear_probe(args.checkpoint, args.train, args.val, out=args.out, epochs=args.epochs, lr=args.lr,
                              batch_size=args.batch_size, weight_decay=args.weight_decay, frames=args.frames,
                              stride=args.stride, sampling=args.sampling, size=args.size,
                              short_side=args.short_side, train_views=_views(args.train_views, "--train-views"),
                              val_views=_views(args.val_views, "--val-views"), model_size=args.model_size,
                              device=args.device, workers=args.workers, seed=args.seed)
    except (CheckpointError, ListError) as err:
        raise UserError(str(err)) from None
    for split, info in result["features"].items():
        how = "cached" if info["cached"] else f"computed in {info['seconds']:.1f} s"
        print(f"{split} features: {how} ({info['file']})")
    _videos(result["videos"]["train"], "training ")
    _videos(result["videos"]["val"], "validation ")
    print(f"linear probe: top-1 {result['top1']:.1%}, top-5 {result['top5']:.1%} on {result['videos']['val']['read']} "
          f"videos "
          f"(train top-1 {result['train_top1']:.1%}); "
          f"results {Path(args.out or Path(args.checkpoint).parent / 'linear-probe') / 'linear-probe.json'}")
    return 0


def cmd_finetune(args) -> int:
    """Fine-tune a pretrained encoder with a classification head; resumable."""
    from motionmae.common.lists import ListError
    from motionmae.config import ConfigError, load_config
    from motionmae.evaluation.evaluate import finetune
    from motionmae.models.checkpoints import CheckpointError
    from motionmae.train.pretrain import TrainingDiverged

    overrides = [f"data.train={args.train}", f"data.val={args.val}"] + ([f"run.out={args.out}"] if args.out else [])
    try:
        config = load_config(args.config, overrides + args.set, task="finetune")
        result = finetune(config, None if args.checkpoint == "none" else args.checkpoint, resume=args.resume)
    except (ConfigError, ListError, CheckpointError, TrainingDiverged) as err:
        raise UserError(str(err)) from None
    if not _main_rank():
        return 0
    _videos(result.videos.to_dict(), "training ")
    if result.val:
        print(f"validation (1 clip x 1 crop): top-1 {result.val['val_top1']:.1%}, top-5 {result.val['val_top5']:.1%}")
        if "val_videos" in result.val:  # not in checkpoints written before it was recorded
            _videos(result.val["val_videos"], "validation ")
    print(f"checkpoint: {result.checkpoint}")
    print(f"metrics:    {result.checkpoint.parent / 'metrics.jsonl'}")
    return 0


def cmd_evaluate(args) -> int:
    """Multi-view test of a fine-tuned checkpoint: top-1, top-5, per-class accuracy, confusion matrix."""
    from motionmae.common.lists import ListError
    from motionmae.evaluation.evaluate import evaluate
    from motionmae.models.checkpoints import CheckpointError

    try:
        result = evaluate(args.checkpoint, args.val, clips=args.clips, crops=args.crops, out=args.out,
                          batch_size=args.batch_size, device=args.device, workers=args.workers)
    except (CheckpointError, ListError) as err:
        raise UserError(str(err)) from None
    if not _main_rank():
        return 0
    width = max(len(name) for name in result["class_names"])
    for name, rate in zip(result["class_names"], result["per_class"]):
        print(f"  {name:<{width}}  {'-' if rate is None else f'{rate:.1%}'}")
    _videos(result["videos"], "")
    print(f"top-1 {result['top1']:.1%}, top-5 {result['top5']:.1%} over {result['videos']['read']} of "
          f"{result['videos']['videos']} videos ({result['clips']} clips x {result['crops']} crops = {result['views']} "
          f"views each); confusion matrix {result['figure']}")
    return 0


# ---------------------------------------------------------------- bench


def cmd_bench_speed(args) -> int:
    """Time decode, prepare, a pretraining step and the data loader beside their peers; print the ratios."""
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: need at least 1")
    from motionmae.speed import run_speed

    try:
        run_speed(args.out, quick=args.quick, thread_count=args.threads, tvl1_python=args.tvl1_python)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    return 0


def cmd_bench_loader(args) -> int:
    """The pretraining loader before and after issue 18 beside a plain PyAV loader; print the ratios."""
    for flag, value in (("--clips", args.clips), ("--repeats", args.repeats), ("--rounds", args.rounds)):
        if value < 1:
            raise UserError(f"{flag} {value}: need at least 1")
    if args.clips % args.repeats:
        raise UserError(f"--clips {args.clips} is not a multiple of --repeats {args.repeats}")
    from motionmae.common.lists import ListError
    from motionmae.config import ConfigError
    from motionmae.data.datasets import FlowUnavailable
    from motionmae.io.cache import CacheError
    from motionmae.speed import run_loader_bench

    try:
        run_loader_bench(args.config, args.list, args.out, cache=args.cache, clips=args.clips, repeats=args.repeats,
                         rounds=args.rounds, overrides=args.set)
    except (ConfigError, ListError, FlowUnavailable, CacheError) as err:
        raise UserError(str(err)) from None
    return 0


def cmd_bench_quality(args) -> int:
    """Pretrain-and-probe ablations on the embedded data set (motionmae.ablations)."""
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: need at least 1")
    from motionmae.ablations import QualityError, run_quality

    try:
        run_quality(budget=args.budget, seeds=args.seeds, out=args.out,
                    methods=[m.strip() for m in args.methods.split(",")] if args.methods else None)
    except QualityError as err:
        raise UserError(str(err)) from None
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motionmae",
        description="Self-supervised video representation learning with motion (MME + MGM).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "info", "Print video metadata and codec motion-vector coverage.", """
        motionmae info clip.mp4
        motionmae info videos/*.mp4 --no-motion     # metadata only, faster
        """)
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--no-motion", dest="motion", action="store_false",
                   help="skip decoding motion vectors (metadata only)")
    p.add_argument("--short-side", type=int, default=None,
                   help="measure vectors at this short side (pixels)")
    p.set_defaults(func=cmd_info)

    p = _command(sub, "demo", "Synthetic data -> motion cache -> MME pretraining -> linear probe, on a CPU.", """
        motionmae demo
        motionmae demo --set optim.epochs=2            # shorter
        motionmae demo --seed 1                        # another data set: data/synthetic-seed1, runs/demo-seed1
        """)
    p.add_argument("--config", default="demo", help="preset name or YAML path (default: demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--workers", type=int, default=None, help="processes for data and cache (default: all CPUs)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the synthetic data set; not 0: folders get a -seed<N> suffix (default: 0)")
    p.set_defaults(func=cmd_demo)

    p = _command(sub, "visualize-masks", "Draw a mask strategy over a clip beside its motion magnitude.", """
        motionmae visualize-masks clip.mp4 --mask mgm --out masks.png
        motionmae visualize-masks clip.mp4 --mask smm --sparse --ratio 0.9 --start 40
        motionmae visualize-masks clip.mp4 --mask tube --guidance diff   # frame difference beside
        """)
    p.add_argument("video", metavar="VIDEO")
    p.add_argument("--mask", choices=["tube", "random", "cube", "smm", "mgm"], default="mgm",
                   help="masking strategy (default: mgm)")
    p.add_argument("--sparse", action="store_true", help="sparse variant of smm / mgm")
    p.add_argument("--ratio", type=float, default=None,
                   help="mask ratio (default: 0.9 tube/random, 0.4 cube, 0.75 smm/mgm)")
    p.add_argument("--guidance", choices=["mv", "diff"], default="mv",
                   help="motion source tried first: codec vectors, or frame difference (default: mv)")
    p.add_argument("--start", type=int, default=0, help="first frame index (default: 0)")
    p.add_argument("--frames", type=int, default=16, help="frames in the clip (default: 16)")
    p.add_argument("--stride", type=int, default=2, help="frame sampling stride (default: 2)")
    p.add_argument("--short-side", type=int, default=224, help="resize the short side to this (default: 224)")
    p.add_argument("--tubelet", type=int, default=2, help="frames per token (default: 2)")
    p.add_argument("--patch", type=int, default=16, help="token size in pixels (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", default="masks.png", help="output PNG (default: masks.png)")
    p.set_defaults(func=cmd_visualize_masks)

    p = _command(sub, "visualize", "Draw what a pretraining checkpoint predicts on a clip (MME's Figure 4).", """
        motionmae visualize runs/demo/checkpoint.pt data/synthetic/videos/move_left/move_left_00000.mp4 --out traj.png
        motionmae visualize runs/mme/checkpoint.pt clip.mp4 --start 40 --mask-ratio 0.9 --seed 1
        motionmae visualize runs/videomae/checkpoint.pt clip.mp4 --out rec.png    # pixel target: reconstruction
        Rows are temporal token slices: masked frame, true and predicted trajectories of the masked
        tokens (dark to light in time), original frame. Predictions are drawn in pixels with the
        true displacements' per-token mean and std (the target is standardized per token).
        """)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="pretraining checkpoint (`motionmae pretrain`), or its .safetensors export")
    p.add_argument("video", metavar="VIDEO", help="any video; flow comes from the motion cache or is computed")
    p.add_argument("--out", default="traj.png", help="output PNG (default: traj.png)")
    p.add_argument("--start", type=int, default=None, help="first raw frame of the clip (default: the middle clip)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mask (default: 0)")
    p.add_argument("--mask-ratio", type=float, default=None, help="mask ratio (default: the checkpoint's)")
    p.add_argument("--rows", type=int, default=4, help="temporal token slices shown, spread over the clip (default: 4)")
    p.set_defaults(func=cmd_visualize)

    p = _command(sub, "make-synthetic", "Write the embedded data set: 12 classes defined only by motion.", """
        motionmae make-synthetic data/synthetic                      # 1,200 videos, 32 px x 24 frames (the demo's)
        motionmae make-synthetic data/small --videos-per-class 10 --size 32 --frames 16
        motionmae make-synthetic data/cam --camera-motion mixed      # pan / zoom / still camera
        """)
    p.add_argument("out", metavar="OUT", help="output folder (created; an interrupted run resumes)")
    p.add_argument("--videos-per-class", type=int, default=100, metavar="N", help="videos per class (default: 100)")
    p.add_argument("--size", type=int, default=32, help="frame width and height in pixels (default: 32)")
    p.add_argument("--frames", type=int, default=24, help="frames per video (default: 24)")
    p.add_argument("--fps", type=int, default=25, help="frame rate written to the files (default: 25)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--camera-motion", choices=["none", "pan", "zoom", "mixed"], default="none",
                   help="global camera motion of every video, or a random one each (default: none)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="processes writing videos (default: all CPUs)")
    p.set_defaults(func=cmd_make_synthetic)

    p = _command(sub, "prepare", "Extract camera-compensated optical flow of videos into the motion cache.", """
        motionmae prepare data/synthetic/train.csv --cache cache/motion
        motionmae prepare videos/ --cache cache/motion --workers 8          # folder, searched recursively
        motionmae prepare k400/train.csv --cache /scratch/motion --shard $SLURM_ARRAY_TASK_ID/16
        A killed run resumes where it stopped; failed videos are listed in REPORT.json
        in the cache folder and make the exit code 1. A file whose container claims more
        frames than decode is stored with the frames that decode (a note in the report).
        Shot cuts are found on the way and stored with each video: trajectories across
        them are left out of the loss.
        """)
    p.add_argument("source", metavar="LIST_OR_DIR",
                   help="list file (`path [label]` lines, relative to its folder), folder, or one video")
    p.add_argument("--cache", required=True, metavar="DIR", help="motion cache root")
    p.add_argument("--short-side", type=int, default=256,
                   help="decode with this short side, pixels; 0 keeps the source size (default: 256)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="processes extracting videos (default: all CPUs)")
    p.add_argument("--shard", default="0/1", metavar="i/n",
                   help="process only every n-th video starting at i (0-based) of the sorted list (default: 0/1)")
    p.add_argument("--method", choices=["dis", "farneback"], default="dis", help="flow algorithm (default: dis)")
    p.add_argument("--preset", choices=["ultrafast", "balanced", "fast", "medium"], default="balanced",
                   help="DIS preset (default: balanced)")
    p.add_argument("--compensation", choices=["flow", "features", "none"], default="flow",
                   help="camera homography from flow correspondences, from tracked corners, or off (default: flow)")
    p.add_argument("--stride", type=int, default=4,
                   help="store the flow on a grid this many times coarser than the frames (default: 4)")
    p.add_argument("--codec", choices=["jpeg", "png"], default="jpeg",
                   help="field encoding: jpeg (compact, lossy) or png (lossless) (default: jpeg)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default: 90)")
    p.add_argument("--cut-ratio", type=float, default=CutParams.ratio, metavar="R",
                   help="a frame pair is a shot cut when its warp residual is R times the local median "
                        f"(motionmae.motion.cuts); 0 turns detection off (default: {CutParams.ratio})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = _command(sub, "pack", "Write WebDataset tar shards: videos, their motion-cache entries, labels.", """
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
        """)
    p.add_argument("source", metavar="LIST_OR_DIR",
                   help="list file (`path [label]` lines, relative to its folder), folder, or one video")
    p.add_argument("--cache", required=True, metavar="DIR", help="motion cache root that `prepare` filled")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the shards (created)")
    p.add_argument("--shard-size", type=int, default=256, metavar="N", help="videos per shard (default: 256)")
    p.add_argument("--name", default=None,
                   help="shard file names: NAME-000000.tar, ... (default: the list file's name: train.csv -> train)")
    p.add_argument("--short-side", type=int, default=256,
                   help="the cache made at this short side, pixels, when DIR holds several (default: 256)")
    p.add_argument("--shard", default="0/1", metavar="i/n",
                   help="write only every n-th shard starting at i (0-based) (default: 0/1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pack)

    p = _command(sub, "pretrain", "Pretrain a video ViT (MME, VideoMAE, MaskFeat, MGM, MME+MGM).", """
        motionmae pretrain --config demo
        motionmae pretrain --config mme --set data.train=k400/train.csv --set optim.batch_size=48
        motionmae pretrain --config my-run.yaml        # a YAML file; `base: mme` in it starts from a preset
        motionmae pretrain --config mme-mgm --resume auto          # continue where it stopped
        torchrun --nproc-per-node 8 -m motionmae pretrain --config mme-vitb-k400
        motionmae pretrain --config mme --set 'data.train=shards/train-{000000..000099}.tar'   # `pack`ed shards
        """)
    p.add_argument("--config", default="demo",
                   help=f"preset ({', '.join(preset_names('pretrain'))}) or YAML path (default: demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.epochs=10 (repeatable)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto': continue from the run folder's checkpoint if there is one; or a checkpoint path")
    p.set_defaults(func=cmd_pretrain)

    p = _command(sub, "convert", "Convert checkpoints: ours, official VideoMAE / MME .pth, Hugging Face VideoMAE.", """
        motionmae convert runs/mme/checkpoint.pt hf/mme-vitb          # -> Hugging Face folder
        motionmae convert videomae_base_k400.pth hf/videomae-base      # official .pth -> Hugging Face
        motionmae convert hf/videomae-base videomae.pt                 # Hugging Face folder -> ours
        motionmae convert checkpoint.pth ours.pt --to motionmae --frames 16 --size 224
        motionmae convert runs/mme/checkpoint.pt mme.safetensors       # our weights as safetensors
        Files are read without running code from them: .safetensors, or torch.load(weights_only=True).
        Every command that takes a checkpoint also takes our .safetensors exports.
        """)
    p.add_argument("source", metavar="IN", help="checkpoint file, or Hugging Face folder (config.json + weights)")
    p.add_argument("out", metavar="OUT",
                   help="output folder (--to hf) or file (--to motionmae; --to safetensors: NAME.safetensors)")
    p.add_argument("--to", choices=["hf", "motionmae", "safetensors"], default=None,
                   help="target layout (default: safetensors for an OUT ending in .safetensors, motionmae for "
                        "Hugging Face input, else hf); safetensors: our layout, weights and config only")
    p.add_argument("--frames", type=int, default=16,
                   help="input frames, when IN does not record them (default: 16)")
    p.add_argument("--size", type=int, default=224,
                   help="input crop side in pixels, when IN does not record it (default: 224)")
    p.set_defaults(func=cmd_convert)

    p = _command(sub, "upgrade-checkpoint", "Re-save a motionmae 0.1 pretraining checkpoint to load safely.", """
        motionmae upgrade-checkpoint runs/mme/checkpoint.pt                 # in place, atomically
        motionmae upgrade-checkpoint old/checkpoint.pt runs/mme/checkpoint.pt
        motionmae 0.1 pickled NumPy's RNG state as an array, which safe loading refuses. This reads
        the file with torch.load(weights_only=True) plus NumPy's array globals only (still no other
        code can run) and stores that state as plain values; resuming stays exact.
        """)
    p.add_argument("checkpoint", metavar="CKPT", help="pretraining checkpoint written by motionmae 0.1")
    p.add_argument("out", metavar="OUT", nargs="?", default=None, help="output file (default: CKPT, replaced)")
    p.set_defaults(func=cmd_upgrade_checkpoint)

    p = _command(sub, "linear-probe", "Linear probe: a linear classifier on frozen encoder features (SVT protocol).", """
        motionmae linear-probe runs/demo/checkpoint.pt --train data/synthetic/train.csv --val data/synthetic/val.csv
        motionmae linear-probe ckpt.pt --train ssv2/train.csv --val ssv2/val.csv --sampling segment --train-views 2x3
        Features are computed once per view and cached in OUT/features/; a second run reuses them.
        """)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="pretraining (or fine-tuning) checkpoint, or its .safetensors export")
    p.add_argument("--train", required=True, metavar="LIST",
                   help="labelled training list (`path label` lines) or shard pattern (`motionmae pack`)")
    p.add_argument("--val", required=True, metavar="LIST", help="labelled validation list or shard pattern")
    p.add_argument("--out", default=None, help="results and feature cache (default: CKPT's folder/linear-probe)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the linear layer (default: 20)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD lr for a batch of 256 (default: 0.1)")
    p.add_argument("--batch-size", type=int, default=256, help="feature batch of the linear layer (default: 256)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="(default: 0)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the checkpoint's)")
    p.add_argument("--stride", type=int, default=None, help="dense sampling stride (default: the checkpoint's)")
    p.add_argument("--sampling", choices=["dense", "segment"], default="dense",
                   help="dense (frames `stride` apart) or segment (TSN, one frame per segment) (default: dense)")
    p.add_argument("--size", type=int, default=None, help="crop side in pixels (default: the checkpoint's)")
    p.add_argument("--short-side", type=int, default=None, help="decode size in pixels (default: the checkpoint's)")
    p.add_argument("--train-views", default="1x1", metavar="CxS",
                   help="clips x crops per training video, each a training sample (default: 1x1)")
    p.add_argument("--val-views", default="1x1", metavar="CxS",
                   help="clips x crops per validation video, softmax averaged (default: 1x1)")
    p.add_argument("--model-size", choices=["tiny", "small", "base", "large"], default=None,
                   help="encoder size (default: the checkpoint's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="data-loader workers (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=cmd_linear_probe)

    p = _command(sub, "finetune", "Fine-tune a pretrained encoder for classification (MME / MGM recipe).", """
        motionmae finetune runs/demo/checkpoint.pt --train data/synthetic/train.csv --val data/synthetic/val.csv
        motionmae finetune ckpt.pt --train ssv2/train.csv --val ssv2/val.csv --config finetune-ssv2
        motionmae finetune ckpt.pt --train k400/train.csv --val k400/val.csv --config finetune-k400 --resume auto
        motionmae finetune none --train ... --val ... --set model.size=tiny     # from random init (baseline)
        torchrun --nproc-per-node 8 -m motionmae finetune ckpt.pt --train ... --val ... --config finetune-k400
        """)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="pretraining checkpoint (or its .safetensors export) whose encoder is fine-tuned, or 'none'")
    p.add_argument("--train", required=True, metavar="LIST",
                   help="labelled training list (`path label` lines) or shard pattern (`motionmae pack`)")
    p.add_argument("--val", required=True, metavar="LIST", help="labelled validation list or shard pattern")
    p.add_argument("--config", default="finetune-demo",
                   help=f"fine-tuning preset ({', '.join(preset_names('finetune'))}) or YAML path "
                        "(default: finetune-demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. aug.mixup=0 (repeatable)")
    p.add_argument("--out", default=None, help="run folder (default: the config's run.out)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="'auto': continue from the run folder's checkpoint if there is one; or a checkpoint path")
    p.set_defaults(func=cmd_finetune)

    p = _command(sub, "evaluate", "Multi-view test of a fine-tuned checkpoint (top-1, top-5, per class, confusion).", """
        motionmae evaluate runs/finetune-demo/checkpoint.pt --val data/synthetic/val.csv --clips 5 --crops 3
        motionmae evaluate runs/finetune-ssv2/checkpoint.pt --val ssv2/val.csv --clips 2 --crops 3
        Videos that cannot be read are skipped and counted; accuracy is over the videos read.
        """)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="fine-tuning checkpoint (`motionmae finetune`), or its .safetensors export")
    p.add_argument("--val", required=True, metavar="LIST",
                   help="labelled test list, or shard pattern (`motionmae pack`)")
    p.add_argument("--clips", type=int, default=None, help="temporal views per video (default: the config's)")
    p.add_argument("--crops", type=int, default=None, choices=[1, 2, 3],
                   help="spatial views per video along the long side (default: the config's)")
    p.add_argument("--out", default=None, help="evaluate.json and confusion.png (default: CKPT's folder/evaluate)")
    p.add_argument("--batch-size", type=int, default=4, help="videos per batch (default: 4)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="data-loader workers (default: 2)")
    p.set_defaults(func=cmd_evaluate)

    p = _command(sub, "bench", "Benchmarks: speed beside peer tools, quality of the pretraining variants.", """
        motionmae bench speed                    # decode, prepare, training step, data loader (about 3 min)
        motionmae bench speed --quick            # small sizes: a smoke test
        motionmae bench loader --config mme-vitb-k400 --list data/real/list.txt --cache cache/real
        motionmae bench quality --budget small
        `make bench` installs the peers (transformers, an OpenCV-contrib venv for TV-L1) and runs both.
        """)
    bench = p.add_subparsers(dest="bench", required=True, metavar="KIND")
    p = _command(bench, "speed", "Time decode, prepare, a pretraining step and the data loader beside their peers.", """
        motionmae bench speed
        motionmae bench speed --quick --out runs/bench-speed-quick
        motionmae bench speed --threads 2 --tvl1-python /opt/tvl1/bin/python
        Prints the machine, each comparison's config, absolute figures and ratios, and writes
        OUT/speed.json. TV-L1 (OpenCV contrib) runs in its own venv, made by `make bench`;
        without it that peer is skipped, as is Hugging Face's VideoMAE without transformers.
        """)
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke test, not figures to quote")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and OpenCV threads of every timed process (default: 1, per-core figures)")
    p.add_argument("--tvl1-python", default=".venv-tvl1/bin/python", metavar="PATH",
                   help="Python of the venv with opencv-contrib for the TV-L1 peer (default: .venv-tvl1/bin/python)")
    p.add_argument("--out", default="runs/bench-speed", metavar="DIR",
                   help="folder of speed.json (default: runs/bench-speed)")
    p.set_defaults(func=cmd_bench_speed)
    p = _command(bench, "loader", "Clips/s per core of the pretraining loader before and after issue 18 "
                 "beside a plain PyAV loader.", """
        motionmae prepare data/real/list.txt --cache cache/real       # the motion cache at 256 px
        motionmae bench loader --config mme-vitb-k400 --list data/real/list.txt --cache cache/real
        motionmae bench loader --config videomae --list data/real/list.txt --repeats 2 --out runs/bench-loader-pixel
        Sides, on the same videos and taking turns: the loader with the issue-18 options off
        (data.fast_loader=false, data.repeats=1), a plain PyAV decode-the-span loader (no targets),
        the new loader decoding the whole span, decoding what the target reads, and with --repeats.
        One thread; per core = clips per CPU second. Prints the machine, the config and the
        ratios; writes OUT/loader.json.
        """)
    p.add_argument("--config", required=True, metavar="NAME", help="pretraining preset or config file")
    p.add_argument("--list", required=True, metavar="LIST", help="videos: list file, folder or one video")
    p.add_argument("--cache", default=None, metavar="DIR", help="motion cache root (default: the config's)")
    p.add_argument("--clips", type=int, default=24, metavar="N", help="clips per side per round (default: 24)")
    p.add_argument("--repeats", type=int, default=4, metavar="N",
                   help="data.repeats of the new side: clips per decoded span (default: 4)")
    p.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds, the sides taking turns (default: 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--out", default="runs/bench-loader", metavar="DIR",
                   help="folder of loader.json (default: runs/bench-loader)")
    p.set_defaults(func=cmd_bench_loader)
    p = _command(bench, "quality", "Pretrain-and-probe ablations of targets and masks on the embedded data set.", """
        motionmae bench quality --budget small
        motionmae bench quality --budget full --seeds 3 --out runs/bench-quality-full
        motionmae bench quality --methods mme,videomae --seeds 1 --out runs/bench-mme-vs-videomae
        Every variant pretrains, is linear-probed and fine-tuned under the same budget, once per seed.
        A rerun skips the finished runs (OUT/results.jsonl) and resumes an interrupted one. Writes
        OUT/quality.md (table, the papers' claims met or not), OUT/quality.png and OUT/quality.json.
        """)
    p.add_argument("--budget", choices=["small", "full"], default="small",
                   help="training budget per variant (default: small)")
    p.add_argument("--seeds", type=int, default=2, metavar="N", help="seeds per variant (default: 2)")
    p.add_argument("--methods", metavar="A,B",
                   help="comma-separated subset of the variants (default: all; an unknown name lists them)")
    p.add_argument("--out", default="runs/bench-quality", metavar="DIR",
                   help="results folder (default: runs/bench-quality)")
    p.set_defaults(func=cmd_bench_quality)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, VideoError) as err:
        print(f"motionmae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
