"""The `demo` command: the main job end to end on the embedded synthetic data set."""

from __future__ import annotations

from motionmae.cli.base import add_command


def cmd_demo(args) -> int:
    """The main job end to end on the embedded synthetic data set."""
    from motionmae.demo import run_demo

    summary = run_demo(args.config, args.set, args.workers, args.seed)
    print(f"\nlinear-probe top-1 {summary['top1']:.1%} (top-5 {summary['top5']:.1%}; chance {summary['chance']:.1%})")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"metrics:    {summary['metrics']}")
    print(f"figure:     {summary['figure']}")
    return 0


def add_commands(sub) -> None:
    """Add this group's sub-commands to the `motionmae` parser."""
    p = add_command(
        sub,
        "demo",
        "Synthetic data -> motion cache -> MME pretraining -> linear probe, on a CPU.",
        """
        motionmae demo
        motionmae demo --set optim.epochs=2            # shorter
        motionmae demo --seed 1                        # another data set: data/synthetic-seed1, runs/demo-seed1
        """,
    )
    p.add_argument("--config", default="demo", help="preset name or YAML path (default: demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--workers", type=int, default=None, help="processes for data and cache (default: all CPUs)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic data set; not 0: folders get a -seed<N> suffix (default: 0)",
    )
    p.set_defaults(func=cmd_demo)
