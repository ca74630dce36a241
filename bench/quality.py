"""Quality benchmark: which pretraining variant learns the most, at one compute budget.

    run_quality("small", seeds=3)        # `motionmae bench quality --budget small --seeds 3`
                                         # or `python -m bench.quality --budget small --seeds 3`

Every run starts from the base config, the `demo` preset (MME on ViT-micro: 32 px, 8 frames at
stride 2, 8 px patches, trajectories in px under random masking 0.75, a one-block decoder, the
data set decoded into RAM, one torch thread), and changes one thing (METHODS): the target, the
mask, the data, the frame order, the clips per decoded span, or no pretraining at all. For every
method and every seed: pretrain on the embedded synthetic data set, linear-probe the frozen
encoder (the demo's probe, `linear-probe-demo`) and, for the budget's `finetuned` methods,
fine-tune it (`finetune-demo` without mixup, cutmix and RandAugment, FINETUNE_SETTINGS). Every
method gets the same budget (BUDGETS); seed s seeds pretraining, probe and fine-tuning alike.
Results are the single-view validation top-1 of the probe and of the fine-tuned model.

Runs go `jobs` at a time, each in its own process (default: one per CPU over the base config's
torch threads, on a CPU). OUT holds the data sets (data/plain, data/camera: pans and zooms),
their motion caches (cache/<data>-<compensation>, the demo's: flow at full resolution), one
folder per run (runs/<method>-s<seed>/{pretrain, linear-probe, finetune}) and results.jsonl,
one line per finished run, appended once the run is over. A rerun skips the finished runs and
resumes an interrupted one from its checkpoints; a run that fails is reported in one line (its
traceback in its folder's error.txt) and the others go on. At the end: OUT/quality.md (table,
the papers' claims, measured effects), OUT/quality.png (bar chart), OUT/quality.json.

Budget "small" (docs/benchmarks.md, "Quality on the demo regime"): the demo's data (960 train /
240 val videos), 40 pretraining epochs of 64 clips (600 steps, 0.4x the demo's 1,500: MME's
probe reaches 37 % there, 53 % at 900 steps, 19 % at 450), fine-tuning 10 epochs (150 steps)
for mme and scratch only; 12 methods x 3 seeds, two runs at a time on 2 cores: within the hour
that issue 16 gives it. "full" gives every method of METHODS the demo's 100 epochs and
fine-tunes them all.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from bench.command import BenchError, command, parser
from bench.timing import machine_line
from motionmae.config import Config, FinetuneConfig, load_config
from motionmae.data.synthetic import CLASSES, SyntheticError, make_dataset
from motionmae.demo import DEMO_DATA, PROBE, demo_cache_params
from motionmae.errors import UsageError
from motionmae.figures.charts import bar_chart, save_figure
from motionmae.io.cache import MotionCache
from motionmae.io.prepare import list_videos, prepare
from motionmae.train.finetune import finetune
from motionmae.train.pretrain import pretrain
from motionmae.train.probe import linear_probe


class QualityError(UsageError):
    """A benchmark request that cannot run: unknown method or budget, OUT made with another budget."""


@dataclass(frozen=True)
class Method:
    """A pretraining variant of the base config: `preset`, when given, replaces the base's target,
    mask and model.decoder_depth with its own; `overrides` are `--set` overrides on top; `data` is
    the data set it pretrains, probes and fine-tunes on, `compensation` the camera compensation of
    that data's flow cache; `epochs` the share of the budget's pretraining epochs it gets (0: no
    pretraining, the encoder keeps its random initialization and fine-tuning starts from scratch)."""

    preset: str | None = None
    overrides: tuple[str, ...] = ()
    data: str = "plain"  # plain | camera (the synthetic set with camera pans and zooms)
    compensation: str = "none"  # none (the demo's cache) | flow
    epochs: float = 1.0


PIXEL = ("target.name=pixel", "target.options=null")  # VideoMAE's target: per-token normalized pixels
METHODS = {
    "mme": Method(),  # the base: trajectories in px, random 0.75, decoder 1
    "pixel": Method(overrides=PIXEL),  # the same with VideoMAE's target
    "videomae": Method("videomae"),  # VideoMAE's recipe: pixel, tube 0.9, decoder 4
    "maskfeat": Method("maskfeat"),  # MaskFeat's: HOG, cube 0.4, decoder 1
    "mme-shape": Method(overrides=("target.options.shape=true",)),  # with the HOG part the demo leaves out
    "mme-no-interp": Method(overrides=("target.options.interpolate=false",)),
    "mme-camera": Method(data="camera", compensation="flow"),  # the reference of the next one
    "mme-no-camera-comp": Method(data="camera"),
    "mgm": Method(overrides=(*PIXEL, "mask.kind=mgm", "mask.ratio=0.75")),
    "pixel-tube-0.75": Method(overrides=(*PIXEL, "mask.kind=tube", "mask.ratio=0.75")),  # MGM's reference
    "mme-mgm": Method(overrides=("mask.kind=mgm", "mask.ratio=0.75")),
    "pixel-shuffled": Method(overrides=(*PIXEL, "data.shuffle_frames=true")),
    "mme-shuffled": Method(overrides=("data.shuffle_frames=true",)),
    # N clips per decoded span at the same optimizer steps: 1/N the epochs, each of N x the steps
    "mme-repeats-2": Method(overrides=("data.repeats=2",), epochs=0.5),
    "mme-repeats-4": Method(overrides=("data.repeats=4",), epochs=0.25),  # the loader bench's default
    "scratch": Method(epochs=0),  # no pretraining: probe of a random encoder, fine-tuning from scratch
}


@dataclass(frozen=True)
class Budget:
    """What every run gets: the data, the base config, the training lengths and the methods (module docstring)."""

    dataset: dict  # make_dataset arguments: videos_per_class, size (px), frames
    pretrain_epochs: int  # pretraining steps = epochs * (train videos // batch)
    pretrain_warmup: int  # epochs
    batch: int  # clips per pretraining and fine-tuning step
    probe_epochs: int  # linear classifier on cached features (seconds, whatever the count)
    finetune_epochs: int
    finetune_warmup: int  # epochs
    methods: tuple[str, ...] = tuple(METHODS)  # what `run_quality` runs unless told
    finetuned: tuple[str, ...] | None = None  # the methods that are fine-tuned too (None: all)
    base: str = "demo"  # config preset all runs start from (model size, clip, optimizer)
    overrides: tuple[str, ...] = ()  # `--set` overrides of the base config
    camera_motion: str = "mixed"  # synthetic camera motion of the "camera" data set


# Short fine-tuning: mixup, cutmix and RandAugment are regularizers for long schedules; evaluate at the end.
FINETUNE_SETTINGS = ("aug.mixup=0", "aug.cutmix=0", "aug.randaug_ops=0", "run.eval_every=0")
# The report's methods, the most asked-for first (a seed's runs start in this order).
REPORT_METHODS = (
    "mme",
    "pixel",
    "scratch",
    "mme-mgm",
    "mgm",
    "pixel-tube-0.75",
    "mme-no-interp",
    "mme-camera",
    "mme-no-camera-comp",
    "mme-repeats-4",
    "pixel-shuffled",
    "mme-shuffled",
)
PROBE_EPOCHS = load_config(PROBE).optim.epochs
BUDGETS = {
    "small": Budget(
        DEMO_DATA,
        pretrain_epochs=40,
        pretrain_warmup=3,
        batch=64,
        probe_epochs=PROBE_EPOCHS,
        finetune_epochs=10,
        finetune_warmup=1,
        methods=REPORT_METHODS,
        finetuned=("mme", "scratch"),
    ),
    "full": Budget(
        DEMO_DATA,
        pretrain_epochs=100,
        pretrain_warmup=8,
        batch=64,
        probe_epochs=PROBE_EPOCHS,
        finetune_epochs=50,
        finetune_warmup=5,
    ),
}


# ---------------------------------------------------------------- configs of one run


def method_config(name: str, base: str = "demo", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """`base` (with `overrides`) changed as METHODS[name] says: its preset's target, mask and decoder depth,
    then its overrides."""
    method = METHODS[name]
    # The method's overrides go to both: those of target and mask act through the preset,
    # the others (data.shuffle_frames) on the base config.
    config = load_config(base, [*overrides, *method.overrides])
    if method.preset:
        preset = load_config(method.preset, list(method.overrides))
        config.target, config.mask = preset.target, preset.mask
        config.model.decoder_depth = preset.model.decoder_depth
    return config


def pretrain_config(name: str, seed: int, budget: Budget, data: Path, cache: Path, out: Path) -> Config:
    """The base config changed by the method, on `data` (list folder) and `cache`, for its share of the budget."""
    share = METHODS[name].epochs
    epochs = budget.pretrain_epochs * share
    if epochs != int(epochs):
        raise QualityError(
            f"{name} pretrains {share:g}x the budget's {budget.pretrain_epochs} epochs: not whole epochs"
        )
    settings = [
        f"data.train={data / 'train.csv'}",
        f"data.val={data / 'val.csv'}",
        f"data.cache={cache}",
        f"optim.epochs={int(epochs)}",
        f"optim.warmup_epochs={round(budget.pretrain_warmup * share)}",
        f"optim.batch_size={budget.batch}",
        f"run.seed={seed}",
        f"run.out={out}",
    ]
    return method_config(name, budget.base, [*budget.overrides, *settings])


def finetune_config(config: Config, budget: Budget, out: Path) -> FinetuneConfig:
    """`finetune-demo` (FINETUNE_SETTINGS) on the pretraining run's data, clips, model and threads, for the
    budget's epochs."""
    d, m = config.data, config.model
    tuned = load_config(
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
            *FINETUNE_SETTINGS,
            f"optim.epochs={budget.finetune_epochs}",
            f"optim.warmup_epochs={budget.finetune_warmup}",
            f"optim.batch_size={budget.batch}",
            f"run.seed={config.run.seed}",
            f"run.out={out}",
        ],
        task="finetune",
    )
    tuned.run.threads = config.run.threads
    return tuned


def probe_config(config: Config, budget: Budget, out: Path):
    """The demo's probe (`linear-probe-demo`) on the pretraining run's data, for the budget's epochs."""
    return load_config(
        PROBE,
        [
            f"data.train={config.data.train}",
            f"data.val={config.data.val}",
            f"data.workers={config.data.workers}",
            f"optim.epochs={budget.probe_epochs}",
            f"run.seed={config.run.seed}",
            f"run.out={out}",
        ],
    )


def describe(name: str, base: str = "demo") -> str:
    """What a method is, read from its config: 'traj (traj_len=4, ...), random 0.75, decoder 1, camera data'."""
    method = METHODS[name]
    if method.epochs == 0:
        return "no pretraining: a random encoder, fine-tuning from scratch"
    config = method_config(name, base)
    options = ", ".join(f"{k}={v}" for k, v in config.target.options.items())
    parts = [
        config.target.name + (f" ({options})" if options else ""),
        f"{config.mask.kind} {config.mask.ratio:g}",
        f"decoder {config.model.decoder_depth}",
    ]
    if method.data == "camera":
        parts.append("camera data, flow " + ("compensated" if method.compensation == "flow" else "not compensated"))
    if config.data.shuffle_frames:
        parts.append("shuffled frames")
    if config.data.repeats > 1:
        parts.append(f"{config.data.repeats} clips per decoded span")
    if method.epochs != 1:
        parts.append(f"{method.epochs:g}x the epochs")
    return ", ".join(parts)


def default_jobs(budget: Budget) -> int:
    """Runs at a time: on a CPU, one per core over the base config's torch threads; on a GPU, one."""
    run = load_config(budget.base, list(budget.overrides)).run
    if run.device == "cuda" or (run.device == "auto" and torch.cuda.is_available()):
        return 1
    cores = os.cpu_count() or 1
    return max(1, cores // (run.threads or cores))


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
        cache = MotionCache(out / "cache" / f"{data}-{compensation}", demo_cache_params(short_side, compensation))
        report = prepare(
            list_videos(folder / "train.csv") + list_videos(folder / "val.csv"), cache, workers=workers, progress=False
        )
        failed = f", {len(report.failed)} failed (see {cache.dir / 'report.json'})" if report.failed else ""
        print(
            f"data {data}, flow compensation {compensation}: {folder}, cache {cache.dir} "
            f"({time.perf_counter() - started:.0f} s{failed})",
            flush=True,
        )
        paths[data, compensation] = (folder, cache.root)
    return paths


def run_one(name: str, seed: int, budget: Budget, data: Path, cache: Path, folder: Path) -> dict:
    """Pretrain, probe and (for the budget's `finetuned` methods) fine-tune one method with one seed
    (each stage resumes); the results line (fine-tune figures None when not fine-tuned)."""
    times = [time.perf_counter()]
    config = pretrain_config(name, seed, budget, data, cache, folder / "pretrain")
    result = pretrain(config, resume="auto", progress=False)
    times.append(time.perf_counter())
    probe = linear_probe(result.checkpoint, probe_config(config, budget, folder / "linear-probe"), progress=False)
    times.append(time.perf_counter())
    tuned = {"val_top1": None, "val_top5": None}
    if budget.finetuned is None or name in budget.finetuned:
        pretrained = result.checkpoint if METHODS[name].epochs else None  # None: from scratch
        config_ft = finetune_config(config, budget, folder / "finetune")
        tuned = finetune(config_ft, pretrained=pretrained, resume="auto", progress=False).val
    times.append(time.perf_counter())
    seconds = dict(zip(("pretrain", "probe", "finetune"), np.diff(times).round(1).tolist()))
    return {
        "method": name,
        "seed": seed,
        "probe_top1": probe["top1"],
        "probe_top5": probe["top5"],
        "finetune_top1": tuned["val_top1"],
        "finetune_top5": tuned["val_top5"],
        "pretrain_steps": result.steps,
        "seconds": seconds,
    }


def attempt(name: str, seed: int, budget: Budget, data: Path, cache: Path, folder: Path) -> dict:
    """`run_one` in a worker process: {"record": ...}, or {"error": one line} with the traceback
    written to `folder`/error.txt (one broken variant must not cost the others)."""
    try:
        return {"record": run_one(name, seed, budget, data, cache, folder)}
    except Exception as err:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").write_text(traceback.format_exc())
        return {"error": f"{type(err).__name__}: {err}".splitlines()[0]}


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
    """Record the budget in OUT/budget.json; refuse an OUT whose runs were made with another one
    (the budget's default method list aside: it changes no run)."""
    path = out / "budget.json"
    if path.is_file():
        recorded = json.loads(path.read_text())
        if {**recorded, "methods": None} != {**record, "methods": None}:
            raise QualityError(f"{out} holds runs of another budget ({path}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


# ---------------------------------------------------------------- summary, claims, report


def summarize(records: list[dict], methods: list[str]) -> dict:
    """{method: {"seeds", "pretrain_steps", "probe_top1", "finetune_top1"}}, each metric {"mean", "std" (None
    for one seed), "values"} as fractions, or None when the method is not fine-tuned; methods without a
    finished run are left out."""
    summary = {}
    for name in methods:
        rows = [r for r in records if r["method"] == name]
        if rows:
            summary[name] = {"seeds": len(rows), "pretrain_steps": sorted({r["pretrain_steps"] for r in rows})}
            for key in ("probe_top1", "finetune_top1"):
                values = [r[key] for r in rows if r[key] is not None]
                std = float(np.std(values, ddof=1)) if len(values) > 1 else None
                summary[name][key] = {"mean": float(np.mean(values)), "std": std, "values": values} if values else None
    return summary


def percent(stats: dict | None) -> str:
    """'12.3 ± 1.0' (percent; no ± for one seed; '-' for no figure)."""
    if stats is None:
        return "-"
    return f"{100 * stats['mean']:.1f}" + ("" if stats["std"] is None else f" ± {100 * stats['std']:.1f}")


def check_claims(summary: dict) -> list[dict]:
    """The papers' claims as goals at our scale (linear-probe top-1 means; fine-tune top-1 for the
    fine-tuning claim), then effects measured without a goal (repeated sampling: those run):
    [{"claim", "measured", "met": True | False | None (a method it needs has no result), "goal": bool}]."""

    def stats(name: str, key: str = "probe_top1") -> dict | None:
        return summary[name][key] if name in summary else None

    def claim(text: str, pairs: tuple[tuple[str, str], ...], measure, goal: bool = True) -> dict:
        missing = [m for m, key in pairs if stats(m, key) is None]
        if missing:
            return {"claim": text, "measured": "no result for " + ", ".join(missing), "met": None, "goal": goal}
        measured, met = measure()
        return {"claim": text, "measured": measured, "met": bool(met) if goal else None, "goal": goal}

    def gain(a: str, b: str, key: str = "probe_top1") -> float:
        return stats(a, key)["mean"] - stats(b, key)["mean"]

    def versus(a: str, b: str, names: tuple[str, str], key: str = "probe_top1") -> str:
        first, second = percent(stats(a, key)), percent(stats(b, key))
        return f"{names[0]} {first} vs {names[1]} {second}: {100 * gain(a, b, key):+.1f} points"

    def probes(*names: str) -> tuple[tuple[str, str], ...]:
        return tuple((n, "probe_top1") for n in names)

    tuned = (("mme", "finetune_top1"), ("scratch", "finetune_top1"))
    return [
        claim(
            "MME beats pixel (VideoMAE's target) by at least 10 points",
            probes("mme", "pixel"),
            lambda: (versus("mme", "pixel", ("MME", "pixel")), gain("mme", "pixel") >= 0.10),
        ),
        claim(
            "MGM beats random tube at the same ratio (0.75)",
            probes("mgm", "pixel-tube-0.75"),
            lambda: (versus("mgm", "pixel-tube-0.75", ("MGM", "tube")), gain("mgm", "pixel-tube-0.75") > 0),
        ),
        claim(
            "MME+MGM beats MME and MGM alone",
            probes("mme-mgm", "mme", "mgm"),
            lambda: (
                f"MME+MGM {percent(stats('mme-mgm'))} vs MME {percent(stats('mme'))}, MGM {percent(stats('mgm'))}",
                min(gain("mme-mgm", "mme"), gain("mme-mgm", "mgm")) > 0,
            ),
        ),
        claim(
            "shuffling costs MME more than pixel",
            probes("mme", "mme-shuffled", "pixel", "pixel-shuffled"),
            lambda: (
                f"MME loses {100 * gain('mme', 'mme-shuffled'):+.1f} points, "
                f"pixel {100 * gain('pixel', 'pixel-shuffled'):+.1f}",
                gain("mme", "mme-shuffled") > gain("pixel", "pixel-shuffled"),
            ),
        ),
        claim(
            "trajectory interpolation helps MME",
            probes("mme", "mme-no-interp"),
            lambda: (versus("mme", "mme-no-interp", ("with", "without")), gain("mme", "mme-no-interp") > 0),
        ),
        claim(
            "camera compensation helps MME on data with camera motion",
            probes("mme-camera", "mme-no-camera-comp"),
            lambda: (
                versus("mme-camera", "mme-no-camera-comp", ("with", "without")),
                gain("mme-camera", "mme-no-camera-comp") > 0,
            ),
        ),
        claim(
            "fine-tuning from MME beats fine-tuning from scratch by at least 10 points (same budget)",
            tuned,
            lambda: (
                versus("mme", "scratch", ("from MME", "from scratch"), "finetune_top1"),
                gain("mme", "scratch", "finetune_top1") >= 0.10,
            ),
        ),
        *(
            claim(
                f"{n} clips per decoded span (data.repeats={n}) at the same optimizer steps",
                probes(f"mme-repeats-{n}", "mme"),
                lambda n=n: (versus(f"mme-repeats-{n}", "mme", (f"repeats {n}", "repeats 1")), None),
                goal=False,
            )
            for n in (2, 4)
            if f"mme-repeats-{n}" in summary
        ),
    ]


def report_markdown(
    budget_name: str, budget: Budget, seeds: int, summary: dict, claims: list[dict], failed: list[dict], machine: str
) -> str:
    """OUT/quality.md: the results table, then the claims."""
    tuned = "all methods" if budget.finetuned is None else ", ".join(budget.finetuned)
    lines = [
        f"# Quality benchmark, budget {budget_name}",
        "",
        f"Pretraining {budget.pretrain_epochs} epochs at batch {budget.batch} from the `{budget.base}` preset "
        f"(overrides: {', '.join(budget.overrides) or 'none'}); linear probe {budget.probe_epochs} epochs; "
        f"fine-tuning {budget.finetune_epochs} epochs ({tuned}); data {budget.dataset}; up to {seeds} seeds. "
        f"Validation top-1 in %, mean ± std over seeds; chance {100 / len(CLASSES):.1f} %.",
        "",
        f"Machine: {machine}",
        "",
        "| method | what it changes | pretraining steps | linear probe top-1 | fine-tune top-1 | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        steps = ", ".join(map(str, s["pretrain_steps"]))
        lines.append(
            f"| {name} | {describe(name, budget.base)} | {steps} | {percent(s['probe_top1'])} "
            f"| {percent(s['finetune_top1'])} | {s['seeds']} |"
        )
    lines += [
        "",
        "The papers' claims as goals at our scale (on linear-probe top-1 means unless said), and effects "
        "measured without a goal:",
        "",
        "| claim | measured | result |",
        "|---|---|---|",
    ]
    for c in claims:
        verdict = {True: "met", False: "not met", None: "not evaluated"}[c["met"]]
        if not c["goal"] and not c["measured"].startswith("no result"):
            verdict = "measured (no goal)"
        lines.append(f"| {c['claim']} | {c['measured']} | {verdict} |")
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
            if s[key]
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
    seeds: int = 3,
    out="runs/bench-quality",
    methods: list[str] | None = None,
    workers: int | None = None,
    jobs: int | None = None,
) -> dict:
    """Run every (method, seed) not yet in OUT/results.jsonl, `jobs` at a time, then write and print the report.

    `budget`: a name of BUDGETS or a Budget; `methods`: names of METHODS (default: the budget's);
    `workers`: processes that make the data sets and caches (default: one per CPU); `jobs`: runs
    at a time, each in its own process (default: `default_jobs`). Returns what OUT/quality.json holds.
    """
    budget_name, budget = (budget, BUDGETS.get(budget)) if isinstance(budget, str) else ("custom", budget)
    if budget is None:
        raise QualityError(f"unknown budget '{budget_name}' (known: {', '.join(BUDGETS)})")
    methods = list(methods or budget.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise QualityError(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    jobs = jobs or default_jobs(budget)
    out = Path(out)
    check_budget(out, budget_record(budget_name, budget))
    results_path = out / "results.jsonl"
    done = {(r["method"], r["seed"]) for r in read_results(results_path)}
    runs = [(name, seed) for seed in range(seeds) for name in methods]
    todo = [run for run in runs if run not in done]
    print(
        f"bench quality, budget {budget_name}: {len(methods)} methods x {seeds} seeds = {len(runs)} runs, "
        f"{len(runs) - len(todo)} already done, {jobs} at a time; results in {out}",
        flush=True,
    )
    short_side = load_config(budget.base, list(budget.overrides)).data.short_side
    paths = prepare_data(budget, methods, out, short_side, workers or os.cpu_count() or 1)

    started, ended, failed = time.perf_counter(), 0, []
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {}
        for name, seed in todo:
            folder = out / "runs" / f"{name}-s{seed}"
            data, cache = paths[METHODS[name].data, METHODS[name].compensation]
            pending[pool.submit(attempt, name, seed, budget, data, cache, folder)] = (name, seed, folder)
        for future in as_completed(pending):
            name, seed, folder = pending[future]
            number = f"[{runs.index((name, seed)) + 1}/{len(runs)}] {name} seed {seed}"
            try:
                outcome = future.result()
            except Exception as err:  # the worker process died (killed, out of memory): the pool is broken
                outcome = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
            ended += 1
            elapsed = time.perf_counter() - started
            eta = f"elapsed {clock(elapsed)}, ETA {clock(elapsed / ended * (len(todo) - ended))}"
            if "error" in outcome:
                failed.append({"method": name, "seed": seed, "error": outcome["error"]})
                print(f"{number} failed: {outcome['error']} (see {folder / 'error.txt'}); {eta}", flush=True)
                continue
            record = outcome["record"]
            with results_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            s, tuned = record["seconds"], record["finetune_top1"]
            tuned = "" if tuned is None else f", fine-tune {100 * tuned:.1f} %"
            print(
                f"{number}: probe {100 * record['probe_top1']:.1f} %{tuned} ({record['pretrain_steps']} steps; "
                f"pretrain {s['pretrain']:.0f} s, probe {s['probe']:.0f} s, fine-tune {s['finetune']:.0f} s); {eta}",
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
        motionmae bench quality --methods mme,pixel --seeds 1 --jobs 1 --out runs/bench-mme-vs-pixel
        Every variant changes one thing of the `demo` preset (MME on ViT-micro at 32 px), pretrains and
        is linear-probed under the same budget, once per seed; the budget's fine-tuned variants (small:
        mme and scratch) are fine-tuned too. Runs go --jobs at a time, each in its own process. A rerun
        skips the finished runs (OUT/results.jsonl) and resumes an interrupted one. Writes
        OUT/quality.md (table, the papers' claims met or not), OUT/quality.png and OUT/quality.json.
        """,
    )
    p.add_argument(
        "--budget", choices=["small", "full"], default="small", help="training budget per variant (default: small)"
    )
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds per variant (default: 3)")
    p.add_argument(
        "--methods",
        metavar="A,B",
        help="comma-separated variants (default: the budget's; an unknown name lists them all)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="runs at a time (default: on a CPU, the cores over the base preset's torch threads; on a GPU, 1)",
    )
    p.add_argument(
        "--out", default="runs/bench-quality", metavar="DIR", help="results folder (default: runs/bench-quality)"
    )
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise BenchError(f"--seeds {args.seeds}: need at least 1")
    if args.jobs is not None and args.jobs < 1:
        raise BenchError(f"--jobs {args.jobs}: need at least 1")
    try:
        run_quality(
            budget=args.budget,
            seeds=args.seeds,
            out=args.out,
            methods=[m.strip() for m in args.methods.split(",")] if args.methods else None,
            jobs=args.jobs,
        )
    except QualityError as err:
        raise BenchError(str(err)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
