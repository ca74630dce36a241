"""The command line of `motionmae bench KIND ...` and `python -m bench.KIND ...`: one parser per benchmark."""

from __future__ import annotations

import argparse
import functools
import sys
import textwrap

from motionmae.errors import MotionMAEError, UsageError


class BenchError(UsageError):
    """A mistake in a benchmark's command line or inputs; printed as one line."""


def parser(kind: str, help: str, examples: str) -> argparse.ArgumentParser:
    """The parser of `motionmae bench KIND`, whose --help ends with usage examples."""
    return argparse.ArgumentParser(
        prog=f"motionmae bench {kind}",
        description=help,
        epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def command(main):
    """Wrap a benchmark's `main(argv) -> int` so that a `MotionMAEError` prints one line and exits
    with 2 (a usage error, e.g. a `BenchError`) or 1 (a failure), as `motionmae` commands do."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except MotionMAEError as err:
            print(f"motionmae bench: error: {err}", file=sys.stderr)
            return 2 if isinstance(err, UsageError) else 1

    return run
