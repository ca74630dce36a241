"""Training and testing commands: `pretrain`, `linear-probe`, `finetune`, `evaluate`."""

from __future__ import annotations

from pathlib import Path

from motionmae.cli.base import add_command, main_rank, print_videos
from motionmae.config import preset_names


def cmd_pretrain(args) -> int:
    """Pretrain a video ViT per a config preset; resumable."""
    from motionmae.config import load_config
    from motionmae.train.pretrain import pretrain

    result = pretrain(load_config(args.config, args.set), resume=args.resume)
    if main_rank():
        print_videos(result.videos.to_dict(), "training ")
        print(f"checkpoint: {result.checkpoint}")
        print(f"metrics:    {result.checkpoint.parent / 'metrics.jsonl'}")
    return 0


def _shorthands(args, keys: dict) -> list[str]:
    """`--set` overrides of the shorthand flags given: {attribute of args: config key}."""
    return [f"{key}={getattr(args, name)}" for name, key in keys.items() if getattr(args, name) is not None]


def cmd_linear_probe(args) -> int:
    """Train a linear classifier on frozen, cached features of a checkpoint's encoder."""
    from motionmae.config import load_config
    from motionmae.train.probe import linear_probe

    overrides = _shorthands(args, {"train": "data.train", "val": "data.val", "out": "run.out"})
    config = load_config(args.config, overrides + args.set, task="linear-probe")
    result = linear_probe(args.checkpoint, config)
    for split, info in result["features"].items():
        how = "cached" if info["cached"] else f"computed in {info['seconds']:.1f} s"
        print(f"{split} features: {how} ({info['file']})")
    print_videos(result["videos"]["train"], "training ")
    print_videos(result["videos"]["val"], "validation ")
    print(
        f"linear probe: top-1 {result['top1']:.1%}, top-5 {result['top5']:.1%} on {result['videos']['val']['read']} "
        f"videos "
        f"(train top-1 {result['train_top1']:.1%}); "
        f"results {Path(config.run.out or Path(args.checkpoint).parent / 'linear-probe') / 'linear-probe.json'}"
    )
    return 0


def cmd_finetune(args) -> int:
    """Fine-tune a pretrained encoder with a classification head; resumable."""
    from motionmae.config import load_config
    from motionmae.train.finetune import finetune

    overrides = _shorthands(args, {"train": "data.train", "val": "data.val", "out": "run.out"})
    config = load_config(args.config, overrides + args.set, task="finetune")
    result = finetune(config, None if args.checkpoint == "none" else args.checkpoint, resume=args.resume)
    if not main_rank():
        return 0
    print_videos(result.videos.to_dict(), "training ")
    if result.val:
        print(f"validation (1 clip x 1 crop): top-1 {result.val['val_top1']:.1%}, top-5 {result.val['val_top5']:.1%}")
        if "val_videos" in result.val:  # not in checkpoints written before it was recorded
            print_videos(result.val["val_videos"], "validation ")
    print(f"checkpoint: {result.checkpoint}")
    print(f"metrics:    {result.checkpoint.parent / 'metrics.jsonl'}")
    return 0


def cmd_evaluate(args) -> int:
    """Multi-view test of a fine-tuned checkpoint: top-1, top-5, per-class accuracy, confusion matrix."""
    from motionmae.config import load_config
    from motionmae.evaluation.evaluate import evaluate

    overrides = _shorthands(args, {"val": "data.val", "clips": "data.clips", "crops": "data.crops", "out": "run.out"})
    result = evaluate(args.checkpoint, load_config(args.config, overrides + args.set, task="evaluate"))
    if not main_rank():
        return 0
    width = max(len(name) for name in result["class_names"])
    for name, rate in zip(result["class_names"], result["per_class"]):
        print(f"  {name:<{width}}  {'-' if rate is None else f'{rate:.1%}'}")
    print_videos(result["videos"], "")
    print(
        f"top-1 {result['top1']:.1%}, top-5 {result['top5']:.1%} over {result['videos']['read']} of "
        f"{result['videos']['videos']} videos ({result['clips']} clips x {result['crops']} crops = {result['views']} "
        f"views each); confusion matrix {result['figure']}"
    )
    return 0


def add_commands(sub) -> None:
    """Add this group's sub-commands to the `motionmae` parser."""
    p = add_command(
        sub,
        "pretrain",
        "Pretrain a video ViT (MME, VideoMAE, MaskFeat, MGM, MME+MGM).",
        """
        motionmae pretrain --config demo
        motionmae pretrain --config mme --set data.train=k400/train.csv --set optim.batch_size=48
        motionmae pretrain --config my-run.yaml        # a YAML file; `base: mme` in it starts from a preset
        motionmae pretrain --config mme-mgm --resume auto          # continue where it stopped
        torchrun --nproc-per-node 8 -m motionmae pretrain --config mme-vitb-k400
        motionmae pretrain --config mme --set 'data.train=shards/train-{000000..000099}.tar'   # `pack`ed shards
        """,
    )
    p.add_argument(
        "--config", default="demo", help=f"preset ({', '.join(preset_names('pretrain'))}) or YAML path (default: demo)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. optim.epochs=10 (repeatable)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="'auto': continue from the run folder's checkpoint if there is one; or a checkpoint path",
    )
    p.set_defaults(func=cmd_pretrain)

    p = add_command(
        sub,
        "linear-probe",
        "Linear probe: a linear classifier on frozen encoder features (SVT protocol).",
        """
        motionmae linear-probe runs/demo/checkpoint.pt --train data/synthetic/train.csv --val data/synthetic/val.csv
        motionmae linear-probe ckpt.pt --train ssv2/train.csv --val ssv2/val.csv --set data.sampling=segment \\
            --set 'data.train_views=[2, 3]'              # 2 clips x 3 crops per training video
        motionmae linear-probe ckpt.pt --config my-probe.yaml   # a YAML file with `task: linear-probe`
        Keys (--set KEY=VALUE): data.{train, val, frames, sampling, stride, size, short_side, train_views,
        val_views, batch_size, workers}, model.size, optim.{epochs, lr, batch_size, weight_decay},
        run.{out, seed, device}; clip sizes and the model default to the checkpoint's.
        Features are computed once per view and cached in OUT/features/; a second run reuses them.
        """,
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="pretraining (or fine-tuning) checkpoint, or its .safetensors export"
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="linear-probe config file (`task: linear-probe`; default: the built-in defaults)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. optim.epochs=50 (repeatable)",
    )
    p.add_argument(
        "--train",
        metavar="LIST",
        help="data.train: labelled training list (`path label` lines) or shard pattern (`motionmae pack`)",
    )
    p.add_argument("--val", metavar="LIST", help="data.val: labelled validation list or shard pattern")
    p.add_argument(
        "--out", default=None, help="run.out: results and feature cache (default: CKPT's folder/linear-probe)"
    )
    p.set_defaults(func=cmd_linear_probe)

    p = add_command(
        sub,
        "finetune",
        "Fine-tune a pretrained encoder for classification (MME / MGM recipe).",
        """
        motionmae finetune runs/demo/checkpoint.pt --train data/synthetic/train.csv --val data/synthetic/val.csv
        motionmae finetune ckpt.pt --train ssv2/train.csv --val ssv2/val.csv --config finetune-ssv2
        motionmae finetune ckpt.pt --train k400/train.csv --val k400/val.csv --config finetune-k400 --resume auto
        motionmae finetune none --train ... --val ... --set model.size=tiny     # from random init (baseline)
        torchrun --nproc-per-node 8 -m motionmae finetune ckpt.pt --train ... --val ... --config finetune-k400
        """,
    )
    p.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="pretraining checkpoint (or its .safetensors export) whose encoder is fine-tuned, or 'none'",
    )
    p.add_argument(
        "--train",
        required=True,
        metavar="LIST",
        help="labelled training list (`path label` lines) or shard pattern (`motionmae pack`)",
    )
    p.add_argument("--val", required=True, metavar="LIST", help="labelled validation list or shard pattern")
    p.add_argument(
        "--config",
        default="finetune-demo",
        help=f"fine-tuning preset ({', '.join(preset_names('finetune'))}) or YAML path (default: finetune-demo)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. aug.mixup=0 (repeatable)",
    )
    p.add_argument("--out", default=None, help="run folder (default: the config's run.out)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="auto|PATH",
        help="'auto': continue from the run folder's checkpoint if there is one; or a checkpoint path",
    )
    p.set_defaults(func=cmd_finetune)

    p = add_command(
        sub,
        "evaluate",
        "Multi-view test of a fine-tuned checkpoint (top-1, top-5, per class, confusion).",
        """
        motionmae evaluate runs/finetune-demo/checkpoint.pt --val data/synthetic/val.csv --clips 5 --crops 3
        motionmae evaluate runs/finetune-ssv2/checkpoint.pt --val ssv2/val.csv --clips 2 --crops 3
        motionmae evaluate ckpt.pt --val k400/val.csv --set data.batch_size=16 --set data.workers=8
        Keys (--set KEY=VALUE): data.{val, clips, crops, batch_size, workers}, run.{out, device}; a YAML
        file with `task: evaluate` holds them too (--config). Clips and crops default to the
        checkpoint's data.test_clips and data.test_crops.
        Videos that cannot be read are skipped and counted; accuracy is over the videos read.
        """,
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="fine-tuning checkpoint (`motionmae finetune`), or its .safetensors export"
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="evaluate config file (`task: evaluate`; default: the built-in defaults)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. data.workers=0 (repeatable)",
    )
    p.add_argument("--val", metavar="LIST", help="data.val: labelled test list, or shard pattern (`motionmae pack`)")
    p.add_argument(
        "--clips", type=int, default=None, help="data.clips: temporal views per video (default: the checkpoint's)"
    )
    p.add_argument(
        "--crops",
        type=int,
        default=None,
        help="data.crops: spatial views per video along the long side, 1 to 3 (default: the checkpoint's)",
    )
    p.add_argument(
        "--out", default=None, help="run.out: evaluate.json and confusion.png (default: CKPT's folder/evaluate)"
    )
    p.set_defaults(func=cmd_evaluate)
