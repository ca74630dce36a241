"""Shot cuts, found from the flow `prepare` computes anyway.

Across a shot cut no flow explains the next frame: warped back by the flow the
estimator found, frame t+1 still differs from frame t almost everywhere, while
inside a shot (even a fast pan or zoom) the warp brings it close. The *score* of
a frame pair is that photometric residual, `mean |I_{t+1}(x + w(x)) - (a I_t(x) + b)|`
(luma, 0-255 scale) over the pixels whose flow stays in the frame, with `w` the
raw (uncompensated) flow and `a`, `b` the least-squares gain and offset (so that
a change of exposure or lighting is not taken for a cut).

A pair is a cut when its score is a spike: at least `ratio` times the median
score of the `window` pairs on each side of it (so a shot whose residual is
high throughout, from blur, noise or motion the flow cannot follow, raises its
own bar), at least `isolation` times the larger of its two neighbours (a cut
is one pair; a burst of fast motion spans several), and at least `floor`.
Gradual transitions (dissolves, fades, wipes) are not detected.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CutParams:
    """Thresholds of `find_cuts` (part of the motion cache's key). `ratio` 0 turns detection off."""

    ratio: float = 4.0  # score / local median score
    isolation: float = 2.0  # score / the larger neighbouring score
    floor: float = 3.0  # least score (luma levels)
    window: int = 8  # pairs on each side that make the local median


def warp_residual(frame0: np.ndarray, frame1: np.ndarray, flow: np.ndarray, sample: int = 4) -> float:
    """Score of a pair: mean absolute luma residual of gray uint8 `(H, W)` frames after warping
    `frame1` back by the raw flow `(H, W, 2)` (px, frame0 -> frame1), after the gain (0.5-2) and
    offset that fit it best to `frame0`: a change of exposure or lighting is not a cut. Read at
    every `sample`-th pixel of each row and column (4: within 1 % of every other pixel's score,
    median over bikes.mp4's pairs, at half the time; the same cuts in bench/cut_bench.py); pixels
    whose flow leaves the frame are left out (unless fewer than 1 % stay)."""
    height, width = frame0.shape
    flow = flow[::sample, ::sample]
    xs = np.arange(0, width, sample, dtype=np.float32)[None, :] + flow[..., 0]
    ys = np.arange(0, height, sample, dtype=np.float32)[:, None] + flow[..., 1]
    warped = cv2.remap(frame1, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    if inside.sum() < 0.01 * inside.size:
        inside[:] = True
    before, after = frame0[::sample, ::sample][inside].astype(np.float32), warped[inside].astype(np.float32)
    before -= before.mean()
    after -= after.mean()
    gain = np.clip((before * after).mean() / max(float((before * before).mean()), 1e-6), 0.5, 2.0)
    return float(np.abs(after - gain * before).mean())


def find_cuts(scores, params: CutParams = CutParams()) -> np.ndarray:
    """Bool `(P,)`: pair t (frames t, t+1) lies across a shot cut, from the pair scores `(P,)`."""
    scores = np.asarray(scores, np.float64)
    cuts = np.zeros(len(scores), bool)
    if params.ratio <= 0:
        return cuts
    for t, score in enumerate(scores):
        if score < params.floor:
            continue
        around = np.concatenate([scores[max(0, t - params.window) : t], scores[t + 1 : t + 1 + params.window]])
        neighbours = [scores[i] for i in (t - 1, t + 1) if 0 <= i < len(scores)]
        cuts[t] = (len(around) == 0 or score >= params.ratio * np.median(around)) and score >= params.isolation * max(
            neighbours, default=0.0
        )
    return cuts


def shot_ids(cuts: np.ndarray) -> np.ndarray:
    """Int `(P + 1,)`: the shot of each frame, counted from 0, given the cut flags `(P,)` of its pairs."""
    return np.concatenate([[0], np.cumsum(np.asarray(cuts, bool))])
