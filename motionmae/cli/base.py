"""What every command module shares: the one-line usage error, sub-command parsers with examples, printing."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from motionmae.common.tally import describe
from motionmae.errors import UsageError


class UserError(UsageError):
    """A mistake in the command line's flags or arguments; printed as one line, exit code 2."""


def main_rank() -> bool:
    """False in the non-zero ranks of a torchrun job: only rank 0 prints the summary."""
    return os.environ.get("RANK", "0") == "0"


def add_command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """Add a sub-command whose --help ends with usage examples."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/n" with 0 <= i < n (0-based, like SLURM_ARRAY_TASK_ID with --array=0-(n-1))."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return index, count


def print_videos(counts: dict, what: str) -> None:
    """Print a `VideoTally.to_dict()`: one summary line, and the first skipped video on stderr."""
    print(f"{what}videos: {describe(counts)}")
    if counts["skipped"]:
        first = counts["skipped_videos"][0]
        print(
            f"{counts['skipped']} {what}video(s) could not be read and were skipped "
            f"(first: {first['path']}: {first['reason']})",
            file=sys.stderr,
        )
