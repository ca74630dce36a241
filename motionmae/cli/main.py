"""The `motionmae` command line: one sub-command per job, one module per group of commands.

Each command is a function `cmd_<name>(args) -> int` plus its parser in its group's
`add_commands`. User mistakes raise `UserError` (or a `VideoError`) and are printed
as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from motionmae.cli import bench, data, demo, figures, models, train
from motionmae.cli.base import UserError
from motionmae.io.video import VideoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motionmae",
        description="Self-supervised video representation learning with motion (MME + MGM).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (demo, data, train, figures, models, bench):
        group.add_commands(sub)
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
