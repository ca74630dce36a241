"""Quality benchmark: which pretraining variant learns the most, at one compute budget.

    run_quality("small", seeds=2)        # `motionmae bench quality --budget small --seeds 2`
                                         # or `python -m bench.quality --budget small --seeds 2`

For every method of METHODS and every seed: pretrain the base config's model
(the `demo` preset: ViT-micro, 32 px, 8 frames at stride 2) with the method's
target, mask and decoder depth on the embedded synthetic data set, then
linear-probe the frozen encoder and fine-tune it. Every method gets the same
budget (BUDGETS: pretraining epochs x batch, probe epochs, fine-tune epochs),
seed s seeds pretraining, probe and fine-tuning alike. Results are the
single-view validation top-1 of the probe and of the fine-tuned model.

OUT holds the data sets (data/plain, data/camera: pans and zooms), their motion
caches (cache/<data>-<compensation>), one folder per run
(runs/<method>-s<seed>/{pretrain, linear-probe, finetune}) and
results.jsonl, one line per finished run, appended once the run is over. A
rerun skips the finished runs and resumes an interrupted one from its
checkpoints; a run that fails is reported in one line (its traceback in its
folder's error.txt) and the others go on. At the end: OUT/quality.md (table
and the papers' claims), OUT/quality.png (bar chart), OUT/quality.json.

Budget arithmetic of "small" (BUDGETS), measured by `make bench` on this 2-core
machine while nothing else ran, ViT-tiny, batch 16, 60 videos per class:

- data: the plain set (720 videos) and its flow cache 76 s; the camera set and
  its two caches (compensated, not) 117 s.
- pretraining 2 epochs of 576 clips (72 steps): 36-63 s per method, 131 s for
  mme-shuffled (its flow is computed on the fly).
- linear probe 20-23 s (features of 720 videos), fine-tuning 1 epoch 35-38 s.
- total: 24 runs in 44.8 min + 3.2 min of data = 48 min. A shared machine
  stretches this: the same MME run took 4x longer beside another 2-core job.

"full" trains the demo set (100 videos per class) 10x longer (20 pretraining and
10 fine-tuning epochs): roughly 4-5 h per seed.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench.command import BenchError, command, parser
from bench.timing import machine_line
from motionmae.config import Config, FinetuneConfig, load_config
from motionmae.data.synthetic import CLASSES, SyntheticError, make_dataset
from motionmae.demo import DEMO_DATA
from motionmae.errors import UsageError
from motionmae.figures.charts import bar_chart, save_figure
from motionmae.io.cache import CacheParams, MotionCache
from motionmae.io.prepare import list_videos, prepare
from motionmae.motion.flow import FlowParams
from motionmae.train.finetune import finetune
from motionmae.train.pretrain import pretrain
from motionmae.train.probe import linear_probe


class QualityError(UsageError):
    """A benchmark request that cannot run: unknown method or budget, OUT made with another budget."""


@dataclass(frozen=True)
class Method:
    """A pretraining variant: the preset whose target, mask and model.decoder_depth it takes, extra
    `--set` overrides, the data set it pretrains, probes and fine-tunes on, and the camera
    compensation of that data's flow cache."""

    preset: str
    overrides: tuple[str, ...] = ()
    data: str = "plain"  # plain | camera (the synthetic set with camera pans and zooms)
    compensation: str = "flow"  # flow | none


METHODS = {
    "videomae": Method("videomae"),  # pixel, tube 0.9, decoder 4
    "maskfeat": Method("maskfeat"),  # HOG, cube 0.4
    "mme": Method("mme"),  # trajectories, tube 0.7
    "mme-no-interp": Method("mme", ("target.options.interpolate=false",)),
    "mme-no-shape": Method("mme", ("target.options.shape=false",)),
    "mme-camera": Method("mme", data="camera"),  # the reference of the next one
    "mme-no-camera-comp": Method("mme", data="camera", compensation="none"),
    "mgm": Method("mgm"),  # pixel, MGM 0.75, decoder 4
    "pixel-tube-0.75": Method("videomae", ("mask.ratio=0.75",)),  # MGM's reference
    "mme-mgm": Method("mme-mgm"),
    "pixel-shuffled": Method("videomae", ("data.shuffle_frames=true",)),
    "mme-shuffled": Method("mme", ("data.shuffle_frames=true",)),
}


@dataclass(frozen=True)
class Budget:
    """What every run gets: the data, the base config and the training lengths (see the module docstring)."""

    dataset: dict  # make_dataset arguments: videos_per_class, size (px), frames
    pretrain_epochs: int  # pretraining steps = epochs * (train videos // batch)
    pretrain_warmup: int  # epochs
    batch: int  # clips per pretraining and fine-tuning step
    probe_epochs: int  # linear classifier on cached features (seconds, whatever the count)
    finetune_epochs: int
    finetune_warmup: int  # epochs
    base: str = "demo"  # config preset all runs start from (model size, clip, optimizer)
    overrides: tuple[str, ...] = ()  # `--set` overrides of the base config
    camera_motion: str = "mixed"  # synthetic camera motion of the "camera" data set


SMALL_DATA = {**DEMO_DATA, "videos_per_class": 60}  # 576 train / 144 val videos: 24 runs fit in an hour
BUDGETS = {
    "small": Budget(
        SMALL_DATA,
        pretrain_epochs=2,
        pretrain_warmup=1,
        batch=16,
        probe_epochs=20,
        finetune_epochs=1,
        finetune_warmup=0,
    ),
    "full": Budget(
        DEMO_DATA,
        pretrain_epochs=20,
        pretrain_warmup=2,
        batch=16,
        probe_epochs=20,
        finetune_epochs=10,
        finetune_warmup=1,
    ),
}


# ---------------------------------------------------------------- configs of one run


def pretrain_config(name: str, seed: int, budget: Budget, data: Path, cache: Path, out: Path) -> Config:
    """The base config with the method's target, mask and decoder depth, on `data` (list folder) and `cache`."""
    method = METHODS[name]
    settings = [
        f"data.train={data / 'train.csv'}",
        f"data.val={data / 'val.csv'}",
        f"data.cache={cache}",
        f"optim.epochs={budget.pretrain_epochs}",
        f"optim.warmup_epochs={budget.pretrain_warmup}",
        f"optim.batch_size={budget.batch}",
        f"run.seed={seed}",
        f"run.out={out}",
    ]
    # The method's overrides go to both: those of target and mask act through the preset,
    # the others (data.shuffle_frames) on the base config.
    preset = load_config(method.preset, method.overrides)
    config = load_config(budget.base, [*budget.overrides, *settings, *method.overrides])
    config.target, config.mask = preset.target, preset.mask
    config.model.decoder_depth = preset.model.decoder_depth
    return config


def finetune_config(config: Config, budget: Budget, out: Path) -> FinetuneConfig:
    """`finetune-demo` on the pretraining run's data, clips and model, for the budget's epochs."""
    d, m = config.data, config.model
    return load_config(
        "finetune-demo",
        [
            f"data.train={d.train}",
            f"data.val={d.val}",
            f"data.frames={d.frames}",
            f"data.stride={d.stride}",
            f"data.size={d.size}",
            f"data.short_side={d.short_side}",
            f"data.workers={d.workers}",
            f"model.size={m.size}",
            f"model.tubelet={m.tubelet}",
            f"model.patch={m.patch}",
            f"optim.epochs={budget.finetune_epochs}",
            f"optim.warmup_epochs={budget.finetune_warmup}",
            f"optim.batch_size={budget.batch}",
            f"run.seed={config.run.seed}",
            f"run.out={out}",
        ],
        task="finetune",
    )


def describe(name: str) -> str:
    """What a method changes, read from its config: 'traj (shape=False), tube 0.7, camera data'."""
    method = METHODS[name]
    config = load_config(method.preset, method.overrides)
    options = ", ".join(f"{k}={v}" for k, v in config.target.options.items())
    parts = [config.target.name + (f" ({options})" if options else ""), f"{config.mask.kind} {config.mask.ratio:g}"]
    if method.data == "camera":
        parts.append("camera data" + ("" if method.compensation == "flow" else ", flow not compensated"))
    if config.data.shuffle_frames:
        parts.append("shuffled frames")
    return ", ".join(parts)


# ---------------------------------------------------------------- data, runs


def prepare_data(budget: Budget, methods: list[str], out: Path, short_side: int, workers: int) -> dict:
    """Synthetic sets and motion caches the methods use, made by `workers` processes:
    {(data, compensation): (list folder, cache root)}."""
    paths = {}
    for data, compensation in sorted({(METHODS[m].data, METHODS[m].compensation) for m in methods}):
        started = time.perf_counter()
        camera = budget.camera_motion if data == "camera" else "none"
        try:
            folder = make_dataset(
                out / "data" / data, **budget.dataset, camera_motion=camera, workers=workers, progress=False
            )
        except SyntheticError as err:  # e.g. made by another generator version: OUT cannot be resumed
            raise QualityError(str(err)) from None
        cache = MotionCache(
            out / "cache" / f"{data}-{compensation}",
            CacheParams(short_side=short_side, flow=FlowParams(compensation=compensation)),
        )
        report = prepare(
            list_videos(folder / "train.csv") + list_videos(folder / "val.csv"), cache, workers=workers, progress=False
        )
        failed = f", {len(report.failed)} failed (see {cache.dir / 'report.json'})" if report.failed else ""
        print(
            f"data {data}, flow compensation {compensation}: {folder}, cache {cache.dir} "
            f"({time.perf_counter() - started:.0f} s{failed})"
        )
        paths[data, compensation] = (folder, cache.root)
    return paths


def run_one(name: str, seed: int, budget: Budget, data: Path, cache: Path, folder: Path) -> dict:
    """Pretrain, probe and fine-tune one method with one seed (each stage resumes); the results line."""
    times = [time.perf_counter()]
    config = pretrain_config(name, seed, budget, data, cache, folder / "pretrain")
    result = pretrain(config, resume="auto")
    times.append(time.perf_counter())
    probe = linear_probe(
        result.checkpoint,
        load_config(
            None,
            [
                f"data.train={config.data.train}",
                f"data.val={config.data.val}",
                f"run.out={folder / 'linear-probe'}",
                f"optim.epochs={budget.probe_epochs}",
                f"data.workers={config.data.workers}",
                f"run.seed={seed}",
            ],
            task="linear-probe",
        ),
        progress=False,
    )
    times.append(time.perf_counter())
    tuned = finetune(
        finetune_config(config, budget, folder / "finetune"),
        pretrained=result.checkpoint,
        resume="auto",
        progress=False,
    )
    times.append(time.perf_counter())
    seconds = dict(zip(("pretrain", "probe", "finetune"), np.diff(times).round(1).tolist()))
    return {
        "method": name,
        "seed": seed,
        "probe_top1": probe["top1"],
        "probe_top5": probe["top5"],
        "finetune_top1": tuned.val["val_top1"],
        "finetune_top5": tuned.val["val_top5"],
        "pretrain_steps": result.steps,
        "seconds": seconds,
    }


def read_results(path: Path) -> list[dict]:
    """The lines of results.jsonl (a line cut short by a crash is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def budget_record(budget_name: str, budget: Budget) -> dict:
    """The budget as JSON reads it back (tuples as lists), with its name."""
    return json.loads(json.dumps({"name": budget_name, **asdict(budget)}))


def check_budget(out: Path, record: dict) -> None:
    """Record the budget in OUT/budget.json; refuse an OUT whose runs were made with another one."""
    path = out / "budget.json"
    if path.is_file() and json.loads(path.read_text()) != record:
        raise QualityError(f"{out} holds runs of another budget ({path}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


# ---------------------------------------------------------------- summary, claims, report


def summarize(records: list[dict], methods: list[str]) -> dict:
    """{method: {"seeds", "probe_top1", "finetune_top1"}}, each metric {"mean", "std" (None for one seed),
    "values"} as fractions; methods without a finished run are left out."""
    summary = {}
    for name in methods:
        rows = [r for r in records if r["method"] == name]
        if rows:
            summary[name] = {"seeds": len(rows)}
            for key in ("probe_top1", "finetune_top1"):
                values = [r[key] for r in rows]
                std = float(np.std(values, ddof=1)) if len(values) > 1 else None
                summary[name][key] = {"mean": float(np.mean(values)), "std": std, "values": values}
    return summary


def percent(stats: dict) -> str:
    """'12.3 ± 1.0' (percent; no ± for one seed)."""
    return f"{100 * stats['mean']:.1f}" + ("" if stats["std"] is None else f" ± {100 * stats['std']:.1f}")


def check_claims(summary: dict) -> list[dict]:
    """The papers' claims as goals at our scale, on linear-probe top-1 means:
    [{"claim", "measured", "met": True | False | None (a method it needs has no result)}]."""
    probe = {name: s["probe_top1"] for name, s in summary.items()}
    mean = {name: s["mean"] for name, s in probe.items()}

    def claim(text: str, needs: tuple[str, ...], measure) -> dict:
        missing = [m for m in needs if m not in mean]
        if missing:
            return {"claim": text, "measured": "no result for " + ", ".join(missing), "met": None}
        measured, met = measure()
        return {"claim": text, "measured": measured, "met": bool(met)}

    def gain(a: str, b: str) -> float:
        return mean[a] - mean[b]

    runner_up = max((m for m in mean if m != "mme-mgm"), key=mean.get, default="any other method")
    cost = {
        m: gain(m, shuffled)
        for m, shuffled in (("mme", "mme-shuffled"), ("videomae", "pixel-shuffled"))
        if m in mean and shuffled in mean
    }
    return [
        claim(
            "MME beats pixel (VideoMAE) by at least 10 points",
            ("mme", "videomae"),
            lambda: (
                f"MME {percent(probe['mme'])} vs VideoMAE {percent(probe['videomae'])}: "
                f"{100 * gain('mme', 'videomae'):+.1f} points",
                gain("mme", "videomae") >= 0.10,
            ),
        ),
        claim(
            "MGM beats random tube at the same ratio (0.75)",
            ("mgm", "pixel-tube-0.75"),
            lambda: (
                f"MGM {percent(probe['mgm'])} vs tube {percent(probe['pixel-tube-0.75'])}: "
                f"{100 * gain('mgm', 'pixel-tube-0.75'):+.1f} points",
                gain("mgm", "pixel-tube-0.75") > 0,
            ),
        ),
        claim(
            "MME+MGM is best",
            ("mme-mgm", runner_up),
            lambda: (
                f"MME+MGM {percent(probe['mme-mgm'])} vs the best other, {runner_up} {percent(probe[runner_up])}",
                gain("mme-mgm", runner_up) >= 0,
            ),
        ),
        claim(
            "shuffling costs MME more than pixel",
            ("mme", "mme-shuffled", "videomae", "pixel-shuffled"),
            lambda: (
                f"MME loses {100 * cost['mme']:+.1f} points, pixel (VideoMAE) {100 * cost['videomae']:+.1f}",
                cost["mme"] > cost["videomae"],
            ),
        ),
    ]


def report_markdown(
    budget_name: str, budget: Budget, seeds: int, summary: dict, claims: list[dict], failed: list[dict], machine: str
) -> str:
    """OUT/quality.md: the results table, then the claims."""
    lines = [
        f"# Quality benchmark, budget {budget_name}",
        "",
        f"Pretraining {budget.pretrain_epochs} epochs at batch {budget.batch} from the `{budget.base}` preset "
        f"(overrides: {', '.join(budget.overrides) or 'none'}); linear probe {budget.probe_epochs} epochs; "
        f"fine-tuning {budget.finetune_epochs} epochs; data {budget.dataset}; up to {seeds} seeds. "
        f"Validation top-1 in %, mean ± std over seeds; chance {100 / len(CLASSES):.1f} %.",
        "",
        f"Machine: {machine}",
        "",
        "| method | target, mask | linear probe top-1 | fine-tune top-1 | seeds |",
        "|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {describe(name)} | {percent(s['probe_top1'])} | {percent(s['finetune_top1'])} | {s['seeds']} |"
        )
    lines += [
        "",
        "The papers' claims as goals at our scale (on linear-probe top-1 means):",
        "",
        "| claim | measured | result |",
        "|---|---|---|",
    ]
    verdict = {True: "met", False: "not met", None: "not evaluated"}
    lines += [f"| {c['claim']} | {c['measured']} | {verdict[c['met']]} |" for c in claims]
    if failed:
        lines += ["", "Failed runs (rerun the command to retry them):", ""]
        lines += [f"- {f['method']} seed {f['seed']}: {f['error']}" for f in failed]
    return "\n".join(lines) + "\n"


def quality_figure(summary: dict, budget_name: str) -> Figure:
    """Bars of probe and fine-tune top-1 (%) per method with std whiskers and the chance line."""
    groups = {
        name: {
            label: (100 * s[key]["mean"], s[key]["std"] and 100 * s[key]["std"])
            for label, key in (("linear probe", "probe_top1"), ("fine-tune", "finetune_top1"))
        }
        for name, s in summary.items()
    }
    chance = 100 / len(CLASSES)
    return bar_chart(
        groups, f"validation top-1, budget {budget_name}", line=(f"chance {chance:.1f} %", chance), ylabel="top-1 (%)"
    )


# ---------------------------------------------------------------- the benchmark


def run_quality(
    budget: str | Budget = "small",
    seeds: int = 2,
    out="runs/bench-quality",
    methods: list[str] | None = None,
    workers: int | None = None,
) -> dict:
    """Run every (method, seed) not yet in OUT/results.jsonl, then write and print the report.

    `budget`: a name of BUDGETS or a Budget; `methods`: names of METHODS (default: all);
    `workers`: processes that make the data sets and caches (default: one per CPU).
    Returns what OUT/quality.json holds.
    """
    budget_name, budget = (budget, BUDGETS.get(budget)) if isinstance(budget, str) else ("custom", budget)
    if budget is None:
        raise QualityError(f"unknown budget '{budget_name}' (known: {', '.join(BUDGETS)})")
    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise QualityError(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    out = Path(out)
    check_budget(out, budget_record(budget_name, budget))
    results_path = out / "results.jsonl"
    done = {(r["method"], r["seed"]) for r in read_results(results_path)}
    runs = [(name, seed) for seed in range(seeds) for name in methods]
    todo = [run for run in runs if run not in done]
    print(
        f"bench quality, budget {budget_name}: {len(methods)} methods x {seeds} seeds = {len(runs)} runs, "
        f"{len(runs) - len(todo)} already done; results in {out}"
    )
    short_side = load_config(budget.base, list(budget.overrides)).data.short_side
    paths = prepare_data(budget, methods, out, short_side, workers or os.cpu_count() or 1)

    started, finished, failed = time.perf_counter(), 0, []
    for name, seed in todo:
        number = f"[{runs.index((name, seed)) + 1}/{len(runs)}] {name} seed {seed}"
        folder = out / "runs" / f"{name}-s{seed}"
        print(f"{number}: {describe(name)}", flush=True)
        try:
            record = run_one(name, seed, budget, *paths[METHODS[name].data, METHODS[name].compensation], folder)
        except Exception as err:  # one broken variant must not cost the others
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "error.txt").write_text(traceback.format_exc())
            failed.append({"method": name, "seed": seed, "error": f"{type(err).__name__}: {err}".splitlines()[0]})
            print(f"{number} failed: {failed[-1]['error']} (traceback in {folder / 'error.txt'})", flush=True)
            continue
        with results_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        finished += 1
        elapsed = time.perf_counter() - started
        left = len(todo) - finished - len(failed)
        s = record["seconds"]
        print(
            f"{number}: probe {100 * record['probe_top1']:.1f} %, fine-tune {100 * record['finetune_top1']:.1f} % "
            f"(pretrain {s['pretrain']:.0f} s, probe {s['probe']:.0f} s, fine-tune {s['finetune']:.0f} s); "
            f"elapsed {clock(elapsed)}, ETA {clock(elapsed / (finished + len(failed)) * left)}",
            flush=True,
        )

    records = [r for r in read_results(results_path) if r["seed"] < seeds]
    summary = summarize(records, methods)
    claims = check_claims(summary)
    machine = machine_line()
    report = {
        "budget": budget_record(budget_name, budget),
        "seeds": seeds,
        "chance": 1 / len(CLASSES),
        "methods": summary,
        "claims": claims,
        "failed": failed,
        "machine": machine,
    }
    table = report_markdown(budget_name, budget, seeds, summary, claims, failed, machine)
    (out / "quality.md").write_text(table)
    save_figure(out / "quality.png", quality_figure(summary, budget_name))
    (out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + table + f"\nwrote {out / 'quality.md'}, {out / 'quality.png'}, {out / 'quality.json'}")
    return report


@command
def main(argv: list[str] | None = None) -> int:
    p = parser(
        "quality",
        "Pretrain-and-probe ablations of targets and masks on the embedded data set.",
        """
        motionmae bench quality --budget small
        motionmae bench quality --budget full --seeds 3 --out runs/bench-quality-full
        motionmae bench quality --methods mme,videomae --seeds 1 --out runs/bench-mme-vs-videomae
        Every variant pretrains, is linear-probed and fine-tuned under the same budget, once per seed.
        A rerun skips the finished runs (OUT/results.jsonl) and resumes an interrupted one. Writes
        OUT/quality.md (table, the papers' claims met or not), OUT/quality.png and OUT/quality.json.
        """,
    )
    p.add_argument(
        "--budget", choices=["small", "full"], default="small", help="training budget per variant (default: small)"
    )
    p.add_argument("--seeds", type=int, default=2, metavar="N", help="seeds per variant (default: 2)")
    p.add_argument(
        "--methods",
        metavar="A,B",
        help="comma-separated subset of the variants (default: all; an unknown name lists them)",
    )
    p.add_argument(
        "--out", default="runs/bench-quality", metavar="DIR", help="results folder (default: runs/bench-quality)"
    )
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise BenchError(f"--seeds {args.seeds}: need at least 1")
    try:
        run_quality(
            budget=args.budget,
            seeds=args.seeds,
            out=args.out,
            methods=[m.strip() for m in args.methods.split(",")] if args.methods else None,
        )
    except QualityError as err:
        raise BenchError(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
