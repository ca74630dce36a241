"""The `bench` command: benchmarks beside their peers."""

from __future__ import annotations

from motionmae.cli.base import UserError, add_command


def cmd_bench_speed(args) -> int:
    """Time decode, prepare, a pretraining step and the data loader beside their peers; print the ratios."""
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: need at least 1")
    from motionmae.speed import run_speed

    run_speed(args.out, quick=args.quick, thread_count=args.threads, tvl1_python=args.tvl1_python)
    return 0


def cmd_bench_loader(args) -> int:
    """The pretraining loader before and after issue 18 beside a plain PyAV loader; print the ratios."""
    for flag, value in (("--clips", args.clips), ("--repeats", args.repeats), ("--rounds", args.rounds)):
        if value < 1:
            raise UserError(f"{flag} {value}: need at least 1")
    if args.clips % args.repeats:
        raise UserError(f"--clips {args.clips} is not a multiple of --repeats {args.repeats}")
    from motionmae.speed import run_loader_bench

    run_loader_bench(args.config, args.list, args.out, cache=args.cache, clips=args.clips, repeats=args.repeats,
                     rounds=args.rounds, overrides=args.set)
    return 0


def cmd_bench_quality(args) -> int:
    """Pretrain-and-probe ablations on the embedded data set (motionmae.ablations)."""
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds}: need at least 1")
    from motionmae.ablations import run_quality

    run_quality(budget=args.budget, seeds=args.seeds, out=args.out,
                methods=[m.strip() for m in args.methods.split(",")] if args.methods else None)
    return 0


def add_commands(sub) -> None:
    """Add this group's sub-commands to the `motionmae` parser."""
    p = add_command(sub, "bench", "Benchmarks: speed beside peer tools, quality of the pretraining variants.", """
        motionmae bench speed                    # decode, prepare, training step, data loader (about 3 min)
        motionmae bench speed --quick            # small sizes: a smoke test
        motionmae bench loader --config mme-vitb-k400 --list data/real/list.txt --cache cache/real
        motionmae bench quality --budget small
        `make bench` installs the peers (transformers, an OpenCV-contrib venv for TV-L1) and runs both.
        """)
    bench = p.add_subparsers(dest="bench", required=True, metavar="KIND")
    p = add_command(bench, "speed",
                    "Time decode, prepare, a pretraining step and the data loader beside their peers.", """
        motionmae bench speed
        motionmae bench speed --quick --out runs/bench-speed-quick
        motionmae bench speed --threads 2 --tvl1-python /opt/tvl1/bin/python
        Prints the machine, each comparison's config, absolute figures and ratios, and writes
        OUT/speed.json. TV-L1 (OpenCV contrib) runs in its own venv, made by `make bench`;
        without it that peer is skipped, as is Hugging Face's VideoMAE without transformers.
        """)
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke test, not figures to quote")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and OpenCV threads of every timed process (default: 1, per-core figures)")
    p.add_argument("--tvl1-python", default=".venv-tvl1/bin/python", metavar="PATH",
                   help="Python of the venv with opencv-contrib for the TV-L1 peer (default: .venv-tvl1/bin/python)")
    p.add_argument("--out", default="runs/bench-speed", metavar="DIR",
                   help="folder of speed.json (default: runs/bench-speed)")
    p.set_defaults(func=cmd_bench_speed)
    p = add_command(bench, "loader", "Clips/s per core of the pretraining loader before and after issue 18 "
                 "beside a plain PyAV loader.", """
        motionmae prepare data/real/list.txt --cache cache/real       # the motion cache at 256 px
        motionmae bench loader --config mme-vitb-k400 --list data/real/list.txt --cache cache/real
        motionmae bench loader --config videomae --list data/real/list.txt --repeats 2 --out runs/bench-loader-pixel
        Sides, on the same videos and taking turns: the loader with the issue-18 options off
        (data.fast_loader=false, data.repeats=1), a plain PyAV decode-the-span loader (no targets),
        the new loader decoding the whole span, decoding what the target reads, and with --repeats.
        One thread; per core = clips per CPU second. Prints the machine, the config and the
        ratios; writes OUT/loader.json.
        """)
    p.add_argument("--config", required=True, metavar="NAME", help="pretraining preset or config file")
    p.add_argument("--list", required=True, metavar="LIST", help="videos: list file, folder or one video")
    p.add_argument("--cache", default=None, metavar="DIR", help="motion cache root (default: the config's)")
    p.add_argument("--clips", type=int, default=24, metavar="N", help="clips per side per round (default: 24)")
    p.add_argument("--repeats", type=int, default=4, metavar="N",
                   help="data.repeats of the new side: clips per decoded span (default: 4)")
    p.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds, the sides taking turns (default: 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--out", default="runs/bench-loader", metavar="DIR",
                   help="folder of loader.json (default: runs/bench-loader)")
    p.set_defaults(func=cmd_bench_loader)
    p = add_command(bench, "quality", "Pretrain-and-probe ablations of targets and masks on the embedded data set.", """
        motionmae bench quality --budget small
        motionmae bench quality --budget full --seeds 3 --out runs/bench-quality-full
        motionmae bench quality --methods mme,videomae --seeds 1 --out runs/bench-mme-vs-videomae
        Every variant pretrains, is linear-probed and fine-tuned under the same budget, once per seed.
        A rerun skips the finished runs (OUT/results.jsonl) and resumes an interrupted one. Writes
        OUT/quality.md (table, the papers' claims met or not), OUT/quality.png and OUT/quality.json.
        """)
    p.add_argument("--budget", choices=["small", "full"], default="small",
                   help="training budget per variant (default: small)")
    p.add_argument("--seeds", type=int, default=2, metavar="N", help="seeds per variant (default: 2)")
    p.add_argument("--methods", metavar="A,B",
                   help="comma-separated subset of the variants (default: all; an unknown name lists them)")
    p.add_argument("--out", default="runs/bench-quality", metavar="DIR",
                   help="results folder (default: runs/bench-quality)")
    p.set_defaults(func=cmd_bench_quality)
