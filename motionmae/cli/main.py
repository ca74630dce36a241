"""The `motionmae` command line: one sub-command per job, one module per group of commands.

Each command is a function `cmd_<name>(args) -> int` plus its parser in its group's
`add_commands`. Every error a user can cause is a `MotionMAEError` (or an `OSError` of a
file they named): `main` prints it as one line, never a traceback, and returns its exit
code: 2 for a usage error (a bad flag, argument or config value), 1 for a failure.
"""

from __future__ import annotations

import argparse
import sys

from motionmae.cli import bench, data, demo, figures, models, train
from motionmae.errors import MotionMAEError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motionmae",
        description="Self-supervised video representation learning with motion (MME + MGM).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (demo, data, train, figures, models, bench):
        group.add_commands(sub)
    return parser


def _error(command: str, err: Exception, code: int) -> int:
    """Print `err` as one line on stderr; return the exit code."""
    print(f"motionmae {command}: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MotionMAEError as err:
        return _error(args.command, err, err.exit_code)
    except OSError as err:  # a file or folder the user named: unreadable, not writable, disk full
        return _error(args.command, err, 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
