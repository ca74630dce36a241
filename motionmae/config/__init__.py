"""Layer 1: run configuration: typed dataclasses (`schema`), the presets shipped as package data (`presets/`)."""

from motionmae.config.schema import (PRESETS, TASKS, AugmentConfig, Config, ConfigError, DataConfig, EvaluateConfig,
                                     FinetuneConfig, FinetuneDataConfig, FinetuneModelConfig, FinetuneOptimConfig,
                                     FinetuneRunConfig, MaskConfig, ModelConfig, OptimConfig, ProbeConfig, RunConfig,
                                     TargetConfig, config_from_dict, load_config, parse_override, preset_names,
                                     preset_path, save_config)

__all__ = ["PRESETS", "TASKS", "AugmentConfig", "Config", "ConfigError", "DataConfig", "EvaluateConfig",
           "FinetuneConfig", "FinetuneDataConfig", "FinetuneModelConfig", "FinetuneOptimConfig", "FinetuneRunConfig",
           "MaskConfig", "ModelConfig", "OptimConfig", "ProbeConfig", "RunConfig", "TargetConfig", "config_from_dict",
           "load_config", "parse_override", "preset_names", "preset_path", "save_config"]
