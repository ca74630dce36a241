"""Configs: presets, inheritance, dotted overrides, clear errors."""

import pytest

from motionmae.config import Config, ConfigError, FinetuneConfig, load_config, parse_override, preset_names


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
    assert sorted(preset_names("pretrain") + preset_names("finetune")) == presets
    assert all(isinstance(load_config(name), Config) for name in preset_names("pretrain"))
    assert all(isinstance(load_config(name), FinetuneConfig) for name in preset_names("finetune"))


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
