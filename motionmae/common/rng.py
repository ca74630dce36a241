"""Random generators per sample: the same draws whichever data-loader worker makes them, in any order."""

from __future__ import annotations

import numpy as np


def sample_rng(seed: int, index: int, epoch: int = 0) -> np.random.Generator:
    """RNG for one sample, independent of which worker draws it or in which order."""
    return np.random.default_rng((seed, epoch, index))


def repeat_rng(seed: int, index: int, epoch: int, repeat: int) -> np.random.Generator:
    """RNG of the `repeat`-th (>= 1) sample of a decoded span; the first one uses `sample_rng`."""
    return np.random.default_rng((seed, epoch, index, repeat))
