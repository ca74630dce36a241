"""Run configuration: dataclasses, YAML presets and dotted `key=value` overrides.

A config file is YAML with the sections below; anything it leaves out keeps
its default. `load_config("mme", ["optim.epochs=10"])` reads the preset
`mme.yaml` (presets ship inside the package, in `motionmae/config/presets/`; any
path works too) and applies overrides, whose values are parsed as YAML (`8`,
`0.5`, `true`, `[1, 0.875]`). Options (`target.options`, `mask.options`) add
up key by key; `target.options=null` empties them, e.g. to switch a preset to
another target: `target.name=pixel target.options=null`. They are the keys of the
kind's typed options (`TrajOptions`, ..., `CubeOptions`, ...), which hold every
default; a key the kind does not have is an error when the config loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from motionmae.errors import UsageError

PRESETS = resources.files("motionmae.config") / "presets"  # package data: found in a wheel install as in a checkout


class ConfigError(UsageError):
    """A config file or override that does not fit the schema."""


@dataclass
class DataConfig:
    train: str = "data/synthetic/train.csv"  # list file (`path label` lines), folder of videos, or shard pattern
    val: str = "data/synthetic/val.csv"  # used by evaluation
    cache: str = "cache/motion"  # motion cache root (see `motionmae prepare`)
    short_side: int = 256  # decode and cache resolution (pixels)
    frames: int = 16  # input frames per clip
    stride: int = 4  # raw frames between input frames
    size: int = 224  # crop side fed to the model (pixels)
    scales: list = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])  # MultiScaleCrop scales
    flip: bool = True  # random horizontal flip
    flow_on_the_fly: bool = False  # compute flow when a video has no cache entry
    workers: int = 2  # DataLoader worker processes
    shuffle_frames: bool = False  # temporal-shuffle ablation: permute the input frames
    shard_buffer: int = 64  # shards (`motionmae pack`): samples each loader worker holds to shuffle
    repeats: int = 1  # repeated sampling: clips per decoded span, each with its own crop, flip and mask
    fast_loader: bool = (
        True  # decode and resample only what the target reads (false: decode and resample the whole span)
    )
    in_memory: bool = False  # decode each video (and read its flow) once, keep it in RAM: small sets, workers 0


@dataclass
class ModelConfig:
    size: str = "base"  # micro (the demo's) | tiny | small | base | large
    tubelet: int = 2
    patch: int = 16
    decoder_depth: int = 1
    decoder_dim: int | None = None  # None: VideoMAE's width for the encoder size
    decoder_heads: int | None = None
    drop_path: float = 0.0
    head: str = "linear"  # linear (one layer, all outputs) | mlp (one MLP per target part: the MME release)
    head_hidden: int = 512  # mlp heads: hidden width
    head_activations: dict = field(default_factory=dict)  # mlp heads: part -> identity | tanh | sigmoid


@dataclass
class TargetConfig:
    name: str = "traj"  # traj | pixel | hog | flow | hof | mbh, or several joined by "+" (hog+traj)
    options: dict = field(default_factory=dict)  # keys of the kinds' options below, and loss_reduction


@dataclass
class MaskConfig:
    kind: str = "tube"  # tube | random | cube | smm | mgm
    ratio: float | None = None  # None: MASK_RATIO[kind] when the config loads
    guidance: str = "mv"  # mgm: motion source tried first (mv = codec vectors | flow | diff); others follow
    options: dict = field(default_factory=dict)  # keys of the kind's options below


# ---------------------------------------------------------------- method options, typed per kind
# Every default of a target builder (motionmae.motion.targets) and mask generator
# (motionmae.motion.masking) is here, once, with the values an option may take;
# their docstrings say what each option does.


def one_of(*values):
    """An option that takes one of `values`, the first its default; checked when a config is loaded."""
    return field(default=values[0], metadata={"choices": values})


@dataclass
class TrajOptions:  # TrajectoryTarget: the MME motion trajectory
    traj_len: int = 6  # L steps (paper 6, release 4)
    interpolate: bool = True
    shape: bool = True
    merge: str | None = one_of(None, "mean", "max")
    traj_norm: str = one_of("scale", "token", "across_k", "none")
    traj_scale: float = 1.0  # px per step that "scale" maps to 1
    dead_zone: float = 0.3  # px per step
    shape_norm: str = one_of("token", "across_k", "none")
    hog_channels: str = one_of("max", "each")
    shape_step_weight: float = 1.0
    validity: str = one_of("trajectory", "token")
    lookup: str = one_of("bilinear", "nearest", "cell")
    tracker: str = one_of("paper", "release")
    median: bool = True
    max_flow: float = 20.0  # px
    position_weight: float = 1.0
    shape_weight: float = 1.0
    bins: int = 9
    cell: int = 8
    hog_stride: int = 2


@dataclass
class PixelOptions:  # PixelTarget (VideoMAE)
    norm: bool = True


@dataclass
class HOGOptions:  # HOGTarget (MaskFeat)
    norm: str = one_of("none", "token", "l2")
    style: str = one_of("maskfeat", "release")
    bins: int = 9
    cell: int = 8


@dataclass
class FlowOptions:  # FlowTarget
    norm: str = one_of("token", "l2", "none")


@dataclass
class HOFOptions:  # HOFTarget
    norm: str = one_of("none", "token", "l2")
    bins: int = 9
    cell: int = 8


@dataclass
class MBHOptions(HOFOptions):
    """MBHTarget: the options of HOF (it histograms the flow's gradients the same way)."""


TARGET_OPTIONS = {
    "traj": TrajOptions,
    "pixel": PixelOptions,
    "hog": HOGOptions,
    "flow": FlowOptions,
    "hof": HOFOptions,
    "mbh": MBHOptions,
}
LOSS_REDUCTION = "mean"  # target.options.loss_reduction: mean | sum (motionmae.motion.targets.target_loss)


@dataclass
class TubeOptions:
    """VideoMAE tube masks: no options beyond `mask.ratio`."""


@dataclass
class RandomOptions:
    """ST-MAE random masks: no options beyond `mask.ratio`."""


@dataclass
class CubeOptions:  # MaskFeat cube masks
    min_area: int = 16  # tokens of a block's spatial rectangle, at least
    min_aspect: float = 0.3


@dataclass
class SMMOptions:  # MGM's simulated-motion masks
    sparse: bool = False
    max_speed: float = 1.0  # tokens per slice
    max_jitter: int = 1  # tokens


@dataclass
class MGMOptions:  # motion-guided masks
    sparse: bool = False
    max_jitter: int = 1  # tokens


MASK_OPTIONS = {"tube": TubeOptions, "random": RandomOptions, "cube": CubeOptions, "smm": SMMOptions, "mgm": MGMOptions}
MASK_RATIO = {"tube": 0.9, "random": 0.9, "cube": 0.4, "smm": 0.75, "mgm": 0.75}  # mask.ratio: null


def _typed(kind_class, options: dict, where: str):
    """`kind_class(**options)`, or a ConfigError naming an unknown key (with the valid ones), a mistyped
    value or one an option does not take."""
    fields = {f.name: f for f in dataclasses.fields(kind_class)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)} (valid: {', '.join(fields) or 'none'})")
    values = {}
    for key, value in options.items():
        default = fields[key].default
        value = _coerce(value, default, f"{where}.{key}")
        if default is not None and value is not None and not isinstance(value, type(default)):
            raise ConfigError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{where}.{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        values[key] = value
    return kind_class(**values)


def target_options(name: str, options: dict) -> tuple[list, str]:
    """The typed options of each part of target `name` ("traj", or several joined by "+") and the
    loss reduction, from `options` (a config's `target.options`): each part takes the keys its
    kind has; a key no part has, or an unknown target, is a ConfigError listing the valid ones."""
    names = name.split("+")
    unknown = [n for n in names if n not in TARGET_OPTIONS]
    if unknown:
        raise ConfigError(
            f"target.name: unknown target {'+'.join(unknown)!r} (valid: {', '.join(TARGET_OPTIONS)}, "
            "or several joined by '+')"
        )
    options = dict(options)
    reduction = options.pop("loss_reduction", LOSS_REDUCTION)
    if reduction not in ("mean", "sum"):
        raise ConfigError(f"target.options.loss_reduction: expected mean or sum, got {reduction!r}")
    known = set().union(*({f.name for f in dataclasses.fields(TARGET_OPTIONS[n])} for n in names))
    stray = sorted(set(options) - known)
    if stray:
        raise ConfigError(
            f"target.options: {name} target has no option(s) {', '.join(stray)} "
            f"(valid: {', '.join(sorted(known | {'loss_reduction'}))})"
        )
    parts = []
    for n in names:
        keys = {f.name for f in dataclasses.fields(TARGET_OPTIONS[n])}
        parts.append(_typed(TARGET_OPTIONS[n], {k: v for k, v in options.items() if k in keys}, "target.options"))
    return parts, reduction


def mask_options(kind: str, options: dict):
    """The typed options of mask `kind` from a config's `mask.options`; ConfigError for an unknown kind or key."""
    if kind not in MASK_OPTIONS:
        raise ConfigError(f"mask.kind: unknown mask {kind!r} (valid: {', '.join(MASK_OPTIONS)})")
    return _typed(MASK_OPTIONS[kind], options, "mask.options")


@dataclass
class OptimConfig:
    epochs: int = 800
    warmup_epochs: int = 40
    batch_size: int = 32  # clips per process per step
    accum_steps: int = 1  # gradient accumulation
    base_lr: float = 1.5e-4  # lr = base_lr * global_batch / 256
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    clip_grad: float | None = None


@dataclass
class RunConfig:
    out: str = "runs/pretrain"  # checkpoints, metrics.jsonl, config.yaml
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # autocast the forward pass: in bf16 on CUDA (ignored on CPU); see amp_dtype
    amp_dtype: str = "bfloat16"  # or float16: loss-scaled (GradScaler), for GPUs without bf16 (V100); CPU too
    compile: bool = False  # torch.compile the model: faster steps after a one-time compile (~1 min)
    threads: int | None = None  # torch threads of each training process (None: torch's default, one per core)
    checkpoint_every: int = 500  # steps
    log_every: int = 10  # steps
    max_steps: int | None = None  # stop early (for tries and tests)
    log_samples: bool = False  # write OUT/samples-rank<r>.jsonl: the videos of every batch of each process


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- fine-tuning (`task: finetune` in YAML)


@dataclass
class FinetuneDataConfig:
    train: str = "data/synthetic/train.csv"  # labelled list file (`path label` lines) or shard pattern
    val: str = "data/synthetic/val.csv"  # validation during training (list or shard pattern)
    num_classes: int | None = None  # None: 1 + the largest label of the train and val lists
    short_side: int = 256  # decode size (pixels)
    frames: int = 16  # input frames per clip
    sampling: str = "dense"  # dense (T frames `stride` apart, Kinetics) | segment (TSN: one per T segments, SSv2)
    stride: int = 4  # dense sampling: raw frames between input frames
    size: int = 224  # crop side fed to the model (pixels)
    workers: int = 2  # DataLoader worker processes
    test_clips: int = 5  # `motionmae evaluate` default temporal views
    test_crops: int = 3  # and spatial views


@dataclass
class FinetuneModelConfig:
    size: str = "base"  # must match the pretrained checkpoint
    tubelet: int = 2
    patch: int = 16
    drop_path: float = 0.1
    head_dropout: float = 0.0


@dataclass
class AugmentConfig:
    crop_area: list = field(default_factory=lambda: [0.08, 1.0])  # random resized crop: area fraction range
    crop_aspect: list = field(default_factory=lambda: [0.75, 1.3333])  # and width/height range
    flip: bool = True  # random horizontal flip (off for SSv2: left/right matters)
    randaug_ops: int = 2  # RandAugment ops per clip (0: off), the same on every frame
    randaug_magnitude: float = 9.0  # RandAugment (9, 0.5): magnitude 0..10
    randaug_std: float = 0.5  # and its per-op Gaussian noise
    label_smoothing: float = 0.1
    mixup: float = 0.8  # Beta(alpha, alpha) of mixup (0: off)
    cutmix: float = 1.0  # Beta(alpha, alpha) of cutmix (0: off)
    mix_prob: float = 1.0  # chance a batch is mixed at all
    switch_prob: float = 0.5  # chance a mixed batch uses cutmix rather than mixup
    repeats: int = 2  # repeated augmentation: each video this many times per epoch


@dataclass
class FinetuneOptimConfig(OptimConfig):
    epochs: int = 30
    warmup_epochs: int = 5
    batch_size: int = 8
    base_lr: float = 5e-4  # lr = base_lr * global_batch / 256
    min_lr: float = 1e-6
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float = 0.75  # lr of layer i = lr * layer_decay ** (depth + 1 - i); head is layer depth + 1


@dataclass
class FinetuneRunConfig(RunConfig):
    out: str = "runs/finetune"
    eval_every: int = 1  # epochs between validations (0: only at the end)


@dataclass
class FinetuneConfig:
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    run: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)

    def to_dict(self) -> dict:
        return {"task": "finetune", **dataclasses.asdict(self)}


# ---------------------------------------------------------------- linear probe (`task: linear-probe`)


@dataclass
class ProbeDataConfig:
    train: str = "data/synthetic/train.csv"  # labelled list file (`path label` lines) or shard pattern
    val: str = "data/synthetic/val.csv"
    frames: int | None = None  # input frames per clip (None: the checkpoint's)
    sampling: str = "dense"  # dense (frames `stride` apart) | segment (TSN: one per segment)
    stride: int | None = None  # dense sampling: raw frames between input frames (None: the checkpoint's)
    size: int | None = None  # crop side (pixels; None: the checkpoint's)
    short_side: int | None = None  # decode size (pixels; None: the checkpoint's)
    train_views: list = field(default_factory=lambda: [1, 1])  # [clips, crops] per training video, each a sample
    val_views: list = field(default_factory=lambda: [1, 1])  # [clips, crops] per validation video, softmax averaged
    batch_size: int = 8  # videos per batch of the frozen encoder
    workers: int = 2  # DataLoader worker processes


@dataclass
class ProbeModelConfig:
    size: str | None = None  # encoder size (None: the checkpoint's)


@dataclass
class ProbeOptimConfig:
    epochs: int = 20  # epochs of the linear layer
    lr: float = 0.1  # SGD lr for a batch of 256 (scaled linearly)
    batch_size: int = 256  # features per step
    weight_decay: float = 0.0


@dataclass
class ProbeRunConfig:
    out: str | None = None  # results and feature cache (None: the checkpoint's folder/linear-probe)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class ProbeConfig:
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    model: ProbeModelConfig = field(default_factory=ProbeModelConfig)
    optim: ProbeOptimConfig = field(default_factory=ProbeOptimConfig)
    run: ProbeRunConfig = field(default_factory=ProbeRunConfig)

    def to_dict(self) -> dict:
        return {"task": "linear-probe", **dataclasses.asdict(self)}


# ---------------------------------------------------------------- multi-view test (`task: evaluate`)


@dataclass
class EvaluateDataConfig:
    val: str = "data/synthetic/val.csv"  # labelled test list, or shard pattern
    clips: int | None = None  # temporal views per video (None: the checkpoint's data.test_clips)
    crops: int | None = None  # spatial views along the long side, 1..3 (None: the checkpoint's data.test_crops)
    batch_size: int = 4  # videos per batch
    workers: int = 2  # DataLoader worker processes


@dataclass
class EvaluateRunConfig:
    out: str | None = None  # evaluate.json and confusion.png (None: the checkpoint's folder/evaluate)
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class EvaluateConfig:
    data: EvaluateDataConfig = field(default_factory=EvaluateDataConfig)
    run: EvaluateRunConfig = field(default_factory=EvaluateRunConfig)

    def to_dict(self) -> dict:
        return {"task": "evaluate", **dataclasses.asdict(self)}


TASKS = {"pretrain": Config, "finetune": FinetuneConfig, "linear-probe": ProbeConfig, "evaluate": EvaluateConfig}


def _merge(section, values: dict, where: str):
    """Set fields of a dataclass instance from a dict, rejecting unknown keys; dict fields
    (target and mask options) are updated key by key, so overrides add to a preset's options."""
    names = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(names))})")
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping, got {value!r}")
            _merge(current, value, f"{where}.{key}")
        elif isinstance(current, dict) and isinstance(value, dict):  # options: add to what is there
            setattr(section, key, {**current, **value})
        elif isinstance(current, dict) and value is None:  # `target.options=null`: drop the preset's options
            setattr(section, key, {})
        else:
            setattr(section, key, _coerce(value, current, f"{where}.{key}"))


def _coerce(value, current, where: str):
    """Numbers written as strings by YAML 1.1 (`3e-4`) become floats where a float is expected."""
    if isinstance(current, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    return value


def _choice(key: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")


def preset_names(task: str | None = None) -> list[str]:
    """Names of the shipped presets, sorted (`["demo", "finetune-demo", ...]`); with `task`
    (a key of TASKS), only the presets of that task."""
    names = sorted(p.name.removesuffix(".yaml") for p in PRESETS.iterdir() if p.name.endswith(".yaml"))
    if task is None:
        return names
    return [
        name
        for name in names
        if (yaml.safe_load((PRESETS / f"{name}.yaml").read_text()) or {}).get("task", "pretrain") == task
    ]


def preset_path(name_or_path: str):
    """`mme` -> the shipped preset mme.yaml (a `Path`, or a `Traversable` when installed as a zip);
    an existing path is returned as it is."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    preset = PRESETS / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"no config file or preset named '{name_or_path}' (presets: {', '.join(preset_names())})")


def parse_override(text: str) -> dict:
    """'optim.epochs=10' -> {'optim': {'epochs': 10}}."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw) if raw else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(name_or_path: str | None = None, overrides: Sequence[str] = (), task: str | None = None):
    """Defaults <- YAML file (with optional `base: other-preset`) <- overrides.

    The file's `task:` key (`pretrain` when absent, `finetune`, `linear-probe` or
    `evaluate`) picks the schema (`TASKS`). `task` given here must agree with it.
    """
    values: dict = {}
    path: Path | None = None
    if name_or_path:
        path = preset_path(name_or_path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    file_task = values.pop("task", "pretrain")
    if file_task not in TASKS:
        raise ConfigError(f"{path}: unknown task '{file_task}' (known: {', '.join(TASKS)})")
    if name_or_path and task and file_task != task:
        raise ConfigError(f"{path} is a {file_task} config; this command reads {task} configs")
    task = task or file_task
    config = TASKS[task]()
    base = values.pop("base", None)
    if base:
        config = load_config(base, task=task)
    if values:
        _merge(config, values, str(path))
    for text in overrides:
        _merge(config, parse_override(text), "--set")
    return _settle(config)


def _settle(config):
    """Check what the dataclasses' types do not say (method options, views, choices); give a null mask
    ratio its kind's default."""
    _choice("run.device", config.run.device, ("auto", "cpu", "cuda"))
    if isinstance(config, (Config, FinetuneConfig)):
        _choice("run.amp_dtype", config.run.amp_dtype, ("bfloat16", "float16"))
    if isinstance(config, (ProbeConfig, FinetuneConfig)):
        _choice("data.sampling", config.data.sampling, ("dense", "segment"))
    if isinstance(config, ProbeConfig):
        for key in ("train_views", "val_views"):
            views = getattr(config.data, key)
            if not (isinstance(views, list) and len(views) == 2 and all(isinstance(v, int) and v >= 1 for v in views)):
                raise ConfigError(f"data.{key}: expected [clips, crops], two whole numbers >= 1, got {views!r}")
    if isinstance(config, EvaluateConfig):
        for key, top in (("clips", None), ("crops", 3)):
            value = getattr(config.data, key)
            if value is not None and not (isinstance(value, int) and 1 <= value <= (top or value)):
                raise ConfigError(
                    f"data.{key}: expected a whole number from 1{f' to {top}' if top else ''}, got {value!r}"
                )
    if isinstance(config, Config):
        target_options(config.target.name, config.target.options)
        mask_options(config.mask.kind, config.mask.options)
        _choice("mask.guidance", config.mask.guidance, ("mv", "flow", "diff"))
        _choice("model.head", config.model.head, ("linear", "mlp"))
        if config.mask.ratio is None:
            config.mask.ratio = MASK_RATIO[config.mask.kind]
    return config


def config_from_dict(values: dict):
    """The config a checkpoint recorded with `to_dict()`."""
    values = dict(values)
    config = TASKS[values.pop("task", "pretrain")]()
    _merge(config, values, "checkpoint config")
    return _settle(config)


def save_config(config: Config, path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
