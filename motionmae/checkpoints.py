"""Checkpoints on disk: atomic save, load, and the random-number state they carry."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def atomic_save(obj, path) -> Path:
    """torch.save to a temp file beside `path`, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({err.__class__.__name__}: {err})") from None


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state_dict_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load weights; on any mismatch raise one clear error listing the keys that do not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def show(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
        problems = []
        if shapes:
            problems.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in shapes[:6])
                + (f" (+{len(shapes) - 6} more)" if len(shapes) > 6 else ""))
        if missing:
            problems.append(f"missing: {show(missing)}")
        if unexpected:
            problems.append(f"unexpected: {show(unexpected)}")
        raise CheckpointError(f"{source} does not fit this model ({'; '.join(problems)})")
    model.load_state_dict(state)


def encoder_state(checkpoint: dict, source) -> dict:
    """The encoder weights (`VisionTransformer` keys) of one of our pretraining or fine-tuning checkpoints.

    Pretraining checkpoints include the encoder's final `norm.*`; fine-tuning ones have none (their
    norm is the classifier's `fc_norm`).
    """
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{source}: holds no 'model' state dict (not a motionmae checkpoint?)")
    state = {k[len("encoder."):]: v for k, v in model.items() if k.startswith("encoder.")}
    if not state:
        raise CheckpointError(f"{source}: its model has no encoder.* weights "
                              f"(keys start with {', '.join(sorted({k.split('.')[0] for k in model})[:6])})")
    return state
