"""Figure commands: `visualize` (what a checkpoint predicts), `visualize-masks` (a mask over a clip)."""

from __future__ import annotations

from motionmae.cli.base import UserError, add_command
from motionmae.config.schema import MASK_RATIO


def cmd_visualize(args) -> int:
    """Draw what a pretraining checkpoint predicts on one clip (MME's Figure 4, or a pixel reconstruction)."""
    from motionmae.evaluation.visualize import visualize_checkpoint

    if args.mask_ratio is not None and not 0 < args.mask_ratio < 1:
        raise UserError(f"--mask-ratio {args.mask_ratio}: expected a number between 0 and 1")
    if args.rows < 1:
        raise UserError(f"--rows {args.rows}: need at least 1")
    result = visualize_checkpoint(
        args.checkpoint, args.video, args.out, args.start, args.seed, args.mask_ratio, args.rows
    )
    print(
        f"wrote {args.out}: {result.target} target, frames {result.start}..{result.start + len(result.frames) - 1}, "
        f"{int(result.mask.sum())}/{result.mask.size} tokens masked"
    )
    return 0


def _crop_to_patches(clip, patch: int):
    """Centre-crop a clip's frames and motion field to whole patches, cut on the 8-px vector grid."""
    import dataclasses

    h, w = clip.frames.shape[1:3]
    ch, cw = h // patch * patch, w // patch * patch
    if not ch or not cw:
        raise UserError(f"frames of {w}x{h} px hold no {patch}x{patch} patch")
    top, left = (h - ch) // 2 // 8 * 8, (w - cw) // 2 // 8 * 8
    motion = clip.motion[:, top // 8 : -(-(top + ch) // 8), left // 8 : -(-(left + cw) // 8)]
    return dataclasses.replace(clip, frames=clip.frames[:, top : top + ch, left : left + cw], motion=motion)


def cmd_visualize_masks(args) -> int:
    """Draw one clip's mask over its frames beside the motion magnitude (MGM's Figure 5)."""
    import numpy as np

    from motionmae.figures.images import save_png
    from motionmae.figures.overlays import mask_figure
    from motionmae.io.video import VideoReader
    from motionmae.motion.masking import MaskGenerator, guidance

    if args.frames % args.tubelet:
        raise UserError(f"--frames {args.frames} is not a multiple of --tubelet {args.tubelet}")
    if args.sparse and args.mask not in ("smm", "mgm"):
        raise UserError(f"--sparse applies to smm and mgm masks, not {args.mask}")
    with VideoReader(args.video, short_side=args.short_side) as reader:
        indices = args.start + args.stride * np.arange(args.frames)
        if indices[-1] >= len(reader):
            raise UserError(
                f"{args.video}: has {len(reader)} frames, the clip needs frame {indices[-1]} "
                f"(--start {args.start}, --frames {args.frames}, --stride {args.stride})"
            )
        clip = _crop_to_patches(reader.read(indices, motion=True), args.patch)
    grid = (args.frames // args.tubelet, clip.frames.shape[1] // args.patch, clip.frames.shape[2] // args.patch)
    generator = MaskGenerator(
        args.mask, args.ratio, grid, prefer=args.guidance, options={"sparse": True} if args.sparse else {}
    )
    magnitude, source = guidance(clip, grid, prefer=args.guidance)
    mask = generator(np.random.default_rng(args.seed), magnitude).reshape(grid)
    name = f"{args.mask}{' sparse' if args.sparse else ''}"
    title = (
        f"{args.video.split('/')[-1]}  {name} ratio {generator.ratio:g}: {int(mask.sum())}/{mask.size} "
        f"tokens masked, motion from {source}"
    )
    save_png(args.out, mask_figure(clip.frames, mask, magnitude, title, (args.patch, args.patch)))
    print(
        f"wrote {args.out}: {name} ratio {generator.ratio:g}, grid {grid}, {int(mask.sum())}/{mask.size} masked; "
        f"motion from {source} ({int(clip.has_motion.sum())}/{len(indices)} frames carry codec vectors)"
    )
    return 0


def add_commands(sub) -> None:
    """Add this group's sub-commands to the `motionmae` parser."""
    p = add_command(
        sub,
        "visualize",
        "Draw what a pretraining checkpoint predicts on a clip (MME's Figure 4).",
        """
        motionmae visualize runs/demo/checkpoint.pt data/synthetic/videos/move_left/move_left_00000.mp4 --out traj.png
        motionmae visualize runs/mme/checkpoint.pt clip.mp4 --start 40 --mask-ratio 0.9 --seed 1
        motionmae visualize runs/videomae/checkpoint.pt clip.mp4 --out rec.png    # pixel target: reconstruction
        Rows are temporal token slices: masked frame, true and predicted trajectories of the masked
        tokens (dark to light in time), original frame. Predictions are drawn in pixels with the
        true displacements' per-token mean and std (the target is standardized per token).
        """,
    )
    p.add_argument(
        "checkpoint", metavar="CKPT", help="pretraining checkpoint (`motionmae pretrain`), or its .safetensors export"
    )
    p.add_argument("video", metavar="VIDEO", help="any video; flow comes from the motion cache or is computed")
    p.add_argument("--out", default="traj.png", help="output PNG (default: traj.png)")
    p.add_argument("--start", type=int, default=None, help="first raw frame of the clip (default: the middle clip)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mask (default: 0)")
    p.add_argument("--mask-ratio", type=float, default=None, help="mask ratio (default: the checkpoint's)")
    p.add_argument("--rows", type=int, default=4, help="temporal token slices shown, spread over the clip (default: 4)")
    p.set_defaults(func=cmd_visualize)

    p = add_command(
        sub,
        "visualize-masks",
        "Draw a mask strategy over a clip beside its motion magnitude.",
        """
        motionmae visualize-masks clip.mp4 --mask mgm --out masks.png
        motionmae visualize-masks clip.mp4 --mask smm --sparse --ratio 0.9 --start 40
        motionmae visualize-masks clip.mp4 --mask tube --guidance diff   # frame difference beside
        """,
    )
    p.add_argument("video", metavar="VIDEO")
    p.add_argument(
        "--mask",
        choices=["tube", "random", "cube", "smm", "mgm"],
        default="mgm",
        help="masking strategy (default: mgm)",
    )
    p.add_argument("--sparse", action="store_true", help="sparse variant of smm / mgm")
    p.add_argument(
        "--ratio",
        type=float,
        default=None,
        help="mask ratio (default: the kind's, "
        f"{', '.join(f'{kind} {ratio:g}' for kind, ratio in MASK_RATIO.items())})",
    )
    p.add_argument(
        "--guidance",
        choices=["mv", "diff"],
        default="mv",
        help="motion source tried first: codec vectors, or frame difference (default: mv)",
    )
    p.add_argument("--start", type=int, default=0, help="first frame index (default: 0)")
    p.add_argument("--frames", type=int, default=16, help="frames in the clip (default: 16)")
    p.add_argument("--stride", type=int, default=2, help="frame sampling stride (default: 2)")
    p.add_argument("--short-side", type=int, default=224, help="resize the short side to this (default: 224)")
    p.add_argument("--tubelet", type=int, default=2, help="frames per token (default: 2)")
    p.add_argument("--patch", type=int, default=16, help="token size in pixels (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", default="masks.png", help="output PNG (default: masks.png)")
    p.set_defaults(func=cmd_visualize_masks)
