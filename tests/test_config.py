"""Configs: presets, inheritance, dotted overrides, clear errors."""

import pytest

from motionmae.config import CONFIG_DIR, ConfigError, load_config, parse_override


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
    presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"mme", "videomae", "maskfeat", "mgm", "mme-mgm", "demo"} <= set(presets)
    for name in presets:
        load_config(name)


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
