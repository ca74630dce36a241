"""Configs: presets, inheritance, dotted overrides, clear errors."""

import dataclasses
import inspect

import pytest

from motionmae.config import TASKS, ConfigError, load_config, parse_override, preset_names
from motionmae.config.schema import MASK_OPTIONS, MASK_RATIO, TARGET_OPTIONS, TrajOptions
from motionmae.motion.targets import build_target


def test_overrides_are_parsed_as_yaml():
    assert parse_override("optim.epochs=10") == {"optim": {"epochs": 10}}
    config = load_config(None, ["optim.base_lr=3e-4", "data.scales=[1, 0.5]", "mask.kind=mgm", "run.amp=false"])
    assert config.optim.base_lr == 3e-4 and config.data.scales == [1, 0.5]
    assert config.mask.kind == "mgm" and config.run.amp is False


def test_option_overrides_add_up_and_null_empties_them():
    config = load_config("mme", ["target.options.traj_norm=none", "target.options.shape=false"])
    assert config.target.options == {"traj_norm": "none", "shape": False}
    config = load_config("demo", ["target.options.traj_len=6"])
    assert config.target.options["traj_len"] == 6 and len(config.target.options) > 1  # the preset's others stay
    config = load_config("demo", ["target.name=pixel", "target.options=null"])
    assert config.target.name == "pixel" and config.target.options == {}


def test_every_preset_loads():
    presets = preset_names()
    assert {"mme", "videomae", "maskfeat", "mgm", "mme-mgm", "demo", "finetune-k400"} <= set(presets)
    for name in presets:
        load_config(name)
    assert sorted(sum((preset_names(task) for task in TASKS), [])) == presets
    for task, schema in TASKS.items():
        assert all(isinstance(load_config(name), schema) for name in preset_names(task))


def test_base_inheritance(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: videomae\noptim:\n  epochs: 3\n")
    config = load_config(str(child))
    assert config.target.name == "pixel" and config.mask.ratio == 0.9 and config.optim.epochs == 3


def test_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        load_config(None, ["optim.epoch=3"])
    with pytest.raises(ConfigError, match="no config file or preset named 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["optim.epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_release_preset_builds_the_release_target_and_decoder():
    from motionmae.motion.targets import RELEASE, build_target
    from motionmae.train.pretrain import build_model

    config = load_config("mme-release-k400", ["model.size=tiny", "data.size=32"])
    options = config.target.options
    target = build_target(config.target.name, **options)
    assert config.target.name == "hog+traj" and {**options} == RELEASE
    assert target.dim == 108 + 32 and target.reduction == "sum"
    model = build_model(config, target.dim, target.parts)
    assert model.encoder_to_decoder.out_features == 192 and len(model.decoder.blocks) == 1
    assert list(model.decoder.head.heads) == ["hog", "position"]
    assert config.data.stride == 4 and config.data.frames == 16 and config.mask.ratio == 0.7


def test_method_options_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"traj target has no option\(s\) traj_length \(valid: bins, cell, "):
        load_config("demo", ["target.options.traj_length=4"])
    with pytest.raises(ConfigError, match=r"traj_len: expected int, got 'four'"):
        load_config("demo", ["target.options.traj_len=four"])
    with pytest.raises(ConfigError, match=r"mask.options: unknown option\(s\) sparse \(valid: none\)"):
        load_config("mme", ["mask.options.sparse=true"])
    with pytest.raises(ConfigError, match=r"unknown option\(s\) max_speed \(valid: sparse, max_jitter\)"):
        load_config("mgm", ["mask.options.max_speed=2"])
    with pytest.raises(ConfigError, match="unknown target 'optical'"):
        load_config("mme", ["target.name=optical"])
    with pytest.raises(ConfigError, match="unknown mask 'blob'"):
        load_config("mme", ["mask.kind=blob"])
    with pytest.raises(ConfigError, match="loss_reduction: expected mean or sum"):
        load_config("mme", ["target.options.loss_reduction=max"])
    # an option of any part of a combined target is valid; an int where a float goes is fine
    config = load_config("mme", ["target.name=hog+traj", "target.options.style=release", "target.options.dead_zone=1"])
    assert config.target.options["style"] == "release" and config.target.options["dead_zone"] == 1.0


def test_every_default_of_a_method_option_lives_in_its_typed_options():
    """The builders take every option without a default of their own: the typed options hold them."""
    from motionmae.motion.masking import MASKS, MaskGenerator
    from motionmae.motion.targets import TARGETS, build_target

    for name, builder in TARGETS.items():
        params = inspect.signature(builder).parameters
        assert set(params) - {"tubelet", "patch"} == {f.name for f in dataclasses.fields(TARGET_OPTIONS[name])}, name
        assert all(params[k].default is inspect.Parameter.empty for k in params if k not in ("tubelet", "patch"))
    for kind, make in MASKS.items():
        params = list(inspect.signature(make).parameters)[3:]
        assert set(params) - {"magnitude"} == {f.name for f in dataclasses.fields(MASK_OPTIONS[kind])}, kind
    assert build_target("traj").traj_len == TrajOptions.traj_len == 6
    assert all(MaskGenerator(kind).ratio == MASK_RATIO[kind] for kind in MASKS)
    assert load_config(None, ["mask.kind=cube"]).mask.ratio == MASK_RATIO["cube"]
    assert load_config("mme", ["mask.kind=cube"]).mask.ratio == 0.7  # the preset's own ratio stays


def test_linear_probe_and_evaluate_configs(tmp_path):
    probe = tmp_path / "probe.yaml"
    probe.write_text("task: linear-probe\ndata: {sampling: segment}\noptim: {epochs: 50}\n")
    config = load_config(str(probe), ["data.train_views=[2, 3]"], task="linear-probe")
    assert config.data.sampling == "segment" and config.optim.epochs == 50 and config.data.train_views == [2, 3]
    assert config.to_dict()["task"] == "linear-probe" and config.model.size is None
    assert load_config("linear-probe-demo").data.train_views == [3, 1]
    with pytest.raises(ConfigError, match=r"data.val_views: expected \[clips, crops\]"):
        load_config(None, ["data.val_views=[2, 0]"], task="linear-probe")
    with pytest.raises(ConfigError, match="data.sampling: expected one of dense, segment"):
        load_config(None, ["data.sampling=tsn"], task="linear-probe")
    with pytest.raises(ConfigError, match="is a linear-probe config; this command reads evaluate configs"):
        load_config(str(probe), task="evaluate")
    config = load_config(None, ["data.clips=2", "data.crops=3"], task="evaluate")
    assert (config.data.clips, config.data.crops, config.data.workers) == (2, 3, 2)
    with pytest.raises(ConfigError, match="data.crops: expected a whole number from 1 to 3, got 4"):
        load_config(None, ["data.crops=4"], task="evaluate")


def test_every_option_with_fixed_values_builds_with_each_and_refuses_others_at_load():
    checked = 0
    for name, kind in TARGET_OPTIONS.items():
        for option in dataclasses.fields(kind):
            choices = option.metadata.get("choices")
            if not choices:
                continue
            for value in choices:
                build_target(name, **{option.name: value})
            with pytest.raises(ConfigError, match=rf"target.options.{option.name}: expected one of .*got 'nonsense'"):
                load_config(None, [f"target.name={name}", f"target.options.{option.name}=nonsense"])
            checked += 1
    assert checked == 12  # traj: 7, hog: 2, flow, hof, mbh
