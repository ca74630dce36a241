"""Checkpoints on disk: atomic save, safe load, and the random-number state they carry.

Loading never runs code from the file. A `.safetensors` file holds only tensors (and text
metadata); anything else goes through `torch.load(weights_only=True)`, which rebuilds tensors
and plain values (dict, list, tuple, str, numbers, None) and refuses every other global.
One more global is allowed: `argparse.Namespace`, because VideoMAE's training script (and
MME's, built on it) saves its command line under "args". Rebuilding a Namespace creates an
empty one and fills its `__dict__` with values already read safely (it has no `__setstate__`
and takes no positional arguments), so no code runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from motionmae.errors import MotionMAEError, UsageError

SAFE_GLOBALS = [argparse.Namespace]
# motionmae 0.1 pickled NumPy's RNG state as an array; `upgrade` alone accepts the globals that rebuild one
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whichever module holds it
NUMPY_ARRAY_GLOBALS = [
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]  # the key's dtype class (numpy.dtypes.UInt32DType in NumPy 2)


class CheckpointError(MotionMAEError):
    """A checkpoint that is missing, unreadable, unsafe, or does not fit the model."""


class CheckpointMismatch(CheckpointError, UsageError):
    """A checkpoint whose weights do not fit the model the config or flags ask for (exit code 2)."""


def _atomic(path, write, check=None, previous=None) -> Path:
    """Call write(temp file beside `path`) and check(temp file), then rename: a crash (or a failed
    check) never leaves half a file. `previous`: where the file at `path`, if any, moves first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        if check is not None:
            check(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if previous is not None and path.exists():
        os.replace(path, previous)
    os.replace(tmp, path)
    return path


def atomic_save(obj, path, previous=None) -> Path:
    """torch.save, atomically. Keep `obj` to tensors and plain values so that `load` reads it back.
    `previous`: a path to keep the file it replaces at (so the last two versions stay on disk)."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp), previous=previous)


def save_safetensors(checkpoint: dict, path) -> Path:
    """Write {"model": tensors, **plain values} as a .safetensors file: the tensors, and the other
    values as JSON under the metadata key "motionmae"; `load` gives the same dict back."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in checkpoint["model"].items()}
    rest = json.dumps({k: v for k, v in checkpoint.items() if k != "model"})
    return _atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", "motionmae": rest}))


def _load_safetensors(path: Path) -> dict:
    with safe_open(path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        ours = (f.metadata() or {}).get("motionmae")
    return {"model": tensors, **json.loads(ours)} if ours else tensors


def _one_line(err: Exception) -> str:
    """The reason in torch's multi-line weights-only message, else the error's first line."""
    text = str(err).strip()
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1) if found else f"{err.__class__.__name__}: {text.splitlines()[0] if text else ''}"


def _refused(path: Path, err: Exception) -> str:
    """One line for a file that torch.load(weights_only=True) would not rebuild."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    if found is None:
        return f"{path}: not a readable checkpoint, or one that needs unsafe unpickling ({_one_line(err)})"
    name = found.group(1)
    if name.startswith("numpy."):
        return (
            f"{path}: holds NumPy arrays ({name}), which safe loading refuses; pretraining checkpoints of "
            f"motionmae 0.1 keep their RNG state so: if you made this file, convert it once with "
            f"`motionmae upgrade-checkpoint {path}`"
        )
    return (
        f"{path}: refused: unpickling it would call {name}, and a pickle can run code; motionmae reads "
        f"checkpoints of tensors and plain values only (torch.load weights_only=True) or .safetensors"
    )


def load(path, map_location="cpu", extra_globals=()) -> dict:
    """A checkpoint read without running code from it: `.safetensors`, or torch.load(weights_only=True).

    Our .safetensors files come back as {"model": tensors, **their metadata}; others as their tensors.
    Raises CheckpointError with one line naming the file when it is missing, damaged, or unsafe.
    `extra_globals`: more globals to allow (see `upgrade`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        if path.suffix == ".safetensors":
            return _load_safetensors(path)
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_globals]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error says enough
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refused(path, err)) from None
    except Exception as err:  # torch and safetensors raise many kinds for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({_one_line(err)})") from None


def load_training_state(path, keys) -> dict:
    """`load` a checkpoint to resume from; raise if it lacks any of `keys` (a weights-only export, say)."""
    state = load(path)
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: cannot resume from it (no {', '.join(missing)}); --resume takes the checkpoint.pt of a run folder"
        )
    return state


def upgrade(path, out=None) -> Path:
    """Re-save a pretraining checkpoint of motionmae 0.1 (NumPy RNG state as an array) in the format
    `load` reads. Reads it with weights_only=True plus only NumPy's array globals (no other code
    can run); writes `out` (default: in place, atomically)."""
    state = load(path, extra_globals=NUMPY_ARRAY_GLOBALS)
    for rank in state.get("rng", []) if isinstance(state, dict) else []:
        if isinstance(rank.get("numpy"), tuple):
            rank["numpy"] = _plain_numpy_state(rank["numpy"])

    def check(tmp):
        try:
            load(tmp)
        except CheckpointError:
            raise CheckpointError(
                f"{path}: holds NumPy arrays outside its RNG state (not a motionmae 0.1 checkpoint); left unchanged"
            ) from None

    return _atomic(out or path, lambda tmp: torch.save(state, tmp), check)


def _plain_numpy_state(state) -> dict:
    """np.random.get_state()'s ("MT19937", key uint32 (624,), pos, has_gauss, gauss) as plain values."""
    _, key, pos, has_gauss, gauss = state
    return {"key": np.asarray(key).tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as plain values and uint8 tensors."""
    state = {
        "python": random.getstate(),
        "numpy": _plain_numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", np.array(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
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
            problems.append(
                "shape mismatch: "
                + ", ".join(f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in shapes[:6])
                + (f" (+{len(shapes) - 6} more)" if len(shapes) > 6 else "")
            )
        if missing:
            problems.append(f"missing: {show(missing)}")
        if unexpected:
            problems.append(f"unexpected: {show(unexpected)}")
        raise CheckpointMismatch(f"{source} does not fit this model ({'; '.join(problems)})")
    model.load_state_dict(state)


def encoder_state(checkpoint: dict, source) -> dict:
    """The encoder weights (`VisionTransformer` keys) of one of our pretraining or fine-tuning checkpoints.

    Pretraining checkpoints include the encoder's final `norm.*`; fine-tuning ones have none (their
    norm is the classifier's `fc_norm`).
    """
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{source}: holds no 'model' state dict (not a motionmae checkpoint?)")
    state = {k[len("encoder.") :]: v for k, v in model.items() if k.startswith("encoder.")}
    if not state:
        raise CheckpointError(
            f"{source}: its model has no encoder.* weights "
            f"(keys start with {', '.join(sorted({k.split('.')[0] for k in model})[:6])})"
        )
    return state
