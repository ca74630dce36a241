"""The `bench` command: runs a benchmark of the source tree's `bench/` package, which is not installed.

`motionmae bench KIND ARGS...` hands ARGS to `bench.KIND.main`, found in the clone this
package runs from (an editable install) or in the working directory.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from motionmae.cli.base import UserError, add_command

KINDS = {  # what `motionmae bench KIND` runs: bench/KIND.py
    "speed": "decode, prepare, a pretraining step and the data loader beside their peers",
    "loader": "clips/s per core of the pretraining loader with and without its speed-ups, beside plain PyAV",
    "quality": "pretrain-and-probe ablations of targets and masks on the embedded data set",
}


def bench_module(kind: str):
    """The module `bench.<kind>` of the source tree; a `UserError` outside a clone."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "bench" / "__init__.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module(f"bench.{kind}")
    raise UserError("benchmarks live in the source tree's bench/ folder; run from a clone")


def cmd_bench(args) -> int:
    """Run `bench.<kind>.main` on the remaining arguments."""
    return bench_module(args.kind).main(args.args)


def add_commands(sub) -> None:
    """Add this group's sub-commands to the `motionmae` parser."""
    p = add_command(
        sub,
        "bench",
        "Benchmarks: speed beside peer tools, quality of the pretraining variants.",
        """
        motionmae bench speed                    # decode, prepare, training step, data loader (about 3 min)
        motionmae bench speed --quick            # small sizes: a smoke test
        motionmae bench loader --config mme-vitb-k400 --list data/real/list.txt --cache cache/real
        motionmae bench quality --budget small
        motionmae bench quality --help           # the options of one benchmark
        `make bench` installs the peers (transformers, an OpenCV-contrib venv for TV-L1) and runs both.
        The benchmarks live in the source tree (bench/, also `python -m bench.KIND`): run them from a clone.
        """,
    )
    p.description = (
        (p.description or "") + "\n\nKIND:\n" + "\n".join(f"  {kind:8s} {text}" for kind, text in KINDS.items())
    )
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=" | ".join(KINDS))
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="...", help="the benchmark's options (KIND --help)")
    p.set_defaults(func=cmd_bench)
