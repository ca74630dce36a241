"""Checkpoint commands: `convert` (ours, official .pth, Hugging Face, safetensors), `upgrade-checkpoint`."""

from __future__ import annotations

from motionmae.cli.base import UserError, add_command


def cmd_convert(args) -> int:
    """Convert a checkpoint between our layout, official VideoMAE / MME `.pth` files and Hugging Face."""
    from motionmae.models.interop import export_hf, model_from_checkpoint, read_checkpoint, save_motionmae
    from motionmae.models.vit import PretrainModel

    safetensors = args.out.endswith(".safetensors")
    if args.to == "safetensors" and not safetensors:
        raise UserError(f"--to safetensors: OUT {args.out} must end in .safetensors (loaders go by the suffix)")
    checkpoint = read_checkpoint(args.source)
    model, loaded = model_from_checkpoint(checkpoint, frames=args.frames, img_size=args.size)
    to = args.to or (
        "safetensors" if safetensors else "motionmae" if loaded.layout.startswith("Hugging Face") else "hf"
    )
    print(loaded)
    if to == "hf":
        architecture = export_hf(model, args.out)["architectures"][0]
        note = (
            " (encoder only: Hugging Face has no decoder for this target)"
            if isinstance(model, PretrainModel) and architecture == "VideoMAEModel"
            else ""
        )
        print(f"wrote {args.out}: Hugging Face {architecture}{note}")
    else:
        out = save_motionmae(model, args.out, args.source, checkpoint, safetensors=to == "safetensors")
        print(f"wrote {out}: motionmae {type(model).__name__}{' (safetensors)' if to == 'safetensors' else ''}")
    return 0


def cmd_upgrade_checkpoint(args) -> int:
    """Re-save a pretraining checkpoint of motionmae 0.1 in the format that loads without unpickling code."""
    from motionmae.models.checkpoints import upgrade

    out = upgrade(args.checkpoint, args.out)
    print(f"wrote {out}: RNG state stored as plain values; it loads safely and resumes as before")
    return 0


def add_commands(sub) -> None:
    """Add this group's sub-commands to the `motionmae` parser."""
    p = add_command(
        sub,
        "convert",
        "Convert checkpoints: ours, official VideoMAE / MME .pth, Hugging Face VideoMAE.",
        """
        motionmae convert runs/mme/checkpoint.pt hf/mme-vitb          # -> Hugging Face folder
        motionmae convert videomae_base_k400.pth hf/videomae-base      # official .pth -> Hugging Face
        motionmae convert hf/videomae-base videomae.pt                 # Hugging Face folder -> ours
        motionmae convert checkpoint.pth ours.pt --to motionmae --frames 16 --size 224
        motionmae convert runs/mme/checkpoint.pt mme.safetensors       # our weights as safetensors
        Files are read without running code from them: .safetensors, or torch.load(weights_only=True).
        Every command that takes a checkpoint also takes our .safetensors exports.
        """,
    )
    p.add_argument("source", metavar="IN", help="checkpoint file, or Hugging Face folder (config.json + weights)")
    p.add_argument(
        "out",
        metavar="OUT",
        help="output folder (--to hf) or file (--to motionmae; --to safetensors: NAME.safetensors)",
    )
    p.add_argument(
        "--to",
        choices=["hf", "motionmae", "safetensors"],
        default=None,
        help="target layout (default: safetensors for an OUT ending in .safetensors, motionmae for "
        "Hugging Face input, else hf); safetensors: our layout, weights and config only",
    )
    p.add_argument("--frames", type=int, default=16, help="input frames, when IN does not record them (default: 16)")
    p.add_argument(
        "--size", type=int, default=224, help="input crop side in pixels, when IN does not record it (default: 224)"
    )
    p.set_defaults(func=cmd_convert)

    p = add_command(
        sub,
        "upgrade-checkpoint",
        "Re-save a motionmae 0.1 pretraining checkpoint to load safely.",
        """
        motionmae upgrade-checkpoint runs/mme/checkpoint.pt                 # in place, atomically
        motionmae upgrade-checkpoint old/checkpoint.pt runs/mme/checkpoint.pt
        motionmae 0.1 pickled NumPy's RNG state as an array, which safe loading refuses. This reads
        the file with torch.load(weights_only=True) plus NumPy's array globals only (still no other
        code can run) and stores that state as plain values; resuming stays exact.
        """,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="pretraining checkpoint written by motionmae 0.1")
    p.add_argument("out", metavar="OUT", nargs="?", default=None, help="output file (default: CKPT, replaced)")
    p.set_defaults(func=cmd_upgrade_checkpoint)
