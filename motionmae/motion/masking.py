"""Mask generators: tube, random, cube, smm and mgm (dense or sparse).

A mask is bool `(N,)` with True = masked, over the token grid `(T', Hp, Wp)`
in VideoMAE order (time-major, then rows, then columns), so
`mask.reshape(T', Hp, Wp)[j]` is temporal slice j. Every generator masks
exactly `num_masked(kind, grid, ratio)` tokens, whatever the RNG or motion,
so samples batch into a dense `(B, N_visible, D)` encoder input.

- tube (VideoMAE): one random spatial set, repeated over time.
- random (ST-MAE): any tokens.
- cube (MaskFeat): union of random space-time blocks.
- smm (MGM paper, Sec. 3.2): per slice a rectangle moved by random velocity.
- mgm (MGM paper, Sec. 3.3): per slice a rectangle centred on the arg-max of
  motion magnitude. Sparse variants take tokens one by one instead of a
  rectangle (mgm: the top-magnitude tokens).

Rectangles have the area `ratio * Hp * Wp` on average; their width and
height carry integer jitter that sums to zero over the slices. A slice
reaches its exact share of tokens by shrinking the rectangle's border ring
(dropping its least moving tokens first) or growing it ring by ring (adding
the most moving tokens of the next ring first).

Motion guidance for mgm is a per-token magnitude map `(T', Hp, Wp)` built by
`guidance(clip, grid)` from, in order of preference, codec motion vectors,
flow (e.g. from the motion cache) or frame difference; it reports the source
used so the data set can record it per sample. Flow guides each input frame by
the raw frames from it to the next input frame, so a token slice is guided by
the motion over the raw frames it covers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from motionmae.config.schema import MASK_RATIO, CubeOptions, MGMOptions, SMMOptions, mask_options
from motionmae.errors import UsageError

SOURCES = ("mv", "flow", "diff")  # guidance sources, default order of preference


# ---------------------------------------------------------------- counts


def num_masked(kind: str, grid: tuple[int, int, int], ratio: float) -> int:
    """Tokens a `kind` mask sets True: round(ratio * N), half up.

    Tube masks repeat one spatial set over time, so theirs is
    T' * round(ratio * Hp * Wp) (VideoMAE's rule); it equals round(ratio * N)
    whenever ratio * Hp * Wp is a whole number.
    """
    t, h, w = _check(grid, ratio)
    if kind == "tube":
        return t * _round(ratio * h * w)
    return _round(ratio * t * h * w)


def _round(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def _check(grid, ratio) -> tuple[int, int, int]:
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"token grid must be three positive sizes (T', Hp, Wp), got {grid}")
    if not 0.0 <= ratio <= 1.0:
        raise UsageError(f"mask ratio must be in [0, 1], got {ratio}")
    t, h, w = (int(g) for g in grid)
    return t, h, w


def _slice_counts(total: int, slices: int, rng: np.random.Generator) -> np.ndarray:
    """Split `total` tokens over `slices` as evenly as possible; int (slices,)."""
    counts = np.full(slices, total // slices)
    counts[rng.permutation(slices)[: total % slices]] += 1
    return counts


# ---------------------------------------------------------------- static strategies


def tube_mask(grid, ratio, rng: np.random.Generator) -> np.ndarray:
    """VideoMAE tube masking: the same random spatial tokens in every slice."""
    t, h, w = _check(grid, ratio)
    frame = np.zeros(h * w, bool)
    frame[rng.permutation(h * w)[: _round(ratio * h * w)]] = True
    return np.tile(frame, t)


def random_mask(grid, ratio, rng: np.random.Generator) -> np.ndarray:
    """ST-MAE random masking: round(ratio * N) tokens anywhere."""
    t, h, w = _check(grid, ratio)
    mask = np.zeros(t * h * w, bool)
    mask[rng.permutation(t * h * w)[: num_masked("random", grid, ratio)]] = True
    return mask


def cube_mask(
    grid,
    ratio,
    rng: np.random.Generator,
    min_area: int = CubeOptions.min_area,
    min_aspect: float = CubeOptions.min_aspect,
) -> np.ndarray:
    """MaskFeat cube masking: add random space-time blocks until the count is reached.

    A block has a spatial area drawn in [min_area, ratio*Hp*Wp] tokens, a
    log-uniform aspect in [min_aspect, 1/min_aspect] and a duration in
    [1, T'] slices. The block that overshoots is only partly applied, on
    random tokens of its own.
    """
    t, h, w = _check(grid, ratio)
    target = num_masked("cube", grid, ratio)
    mask = np.zeros((t, h, w), bool)
    max_area = max(1.0, ratio * h * w)
    low_area = min(float(min_area), max_area)
    count = 0
    while count < target:
        area = rng.uniform(low_area, max_area)
        aspect = math.exp(rng.uniform(math.log(min_aspect), -math.log(min_aspect)))
        bh = min(h, max(1, round(math.sqrt(area * aspect))))
        bw = min(w, max(1, round(math.sqrt(area / aspect))))
        bt = int(rng.integers(1, t + 1))
        t0, y0, x0 = (int(rng.integers(0, n - b + 1)) for n, b in ((t, bt), (h, bh), (w, bw)))
        block = mask[t0 : t0 + bt, y0 : y0 + bh, x0 : x0 + bw]
        free = np.flatnonzero(~block)
        if len(free) > target - count:
            free = rng.choice(free, target - count, replace=False)
        block.flat[free] = True
        count += len(free)
    return mask.reshape(-1)


# ---------------------------------------------------------------- rectangles


def base_size(grid, ratio) -> tuple[int, int]:
    """(w, h) in tokens of a rectangle of area ratio*Hp*Wp with the grid's aspect."""
    _, h, w = _check(grid, ratio)
    area = ratio * h * w
    return min(w, max(1, round(math.sqrt(area * w / h)))), min(h, max(1, round(math.sqrt(area * h / w))))


def zero_sum_jitter(slices: int, bound: int, rng: np.random.Generator) -> np.ndarray:
    """Integer offsets in [-bound, bound], one per slice, summing to zero: int (slices,)."""
    half = rng.integers(-bound, bound + 1, slices // 2)
    return rng.permutation(np.concatenate([half, -half, np.zeros(slices % 2, half.dtype)]))


def jittered_sizes(grid, ratio, rng: np.random.Generator, max_jitter: int) -> np.ndarray:
    """Per-slice rectangle (w, h): int (T', 2), base size plus zero-sum jitter.

    The jitter bound is lowered where needed so no size leaves [1, grid side],
    which keeps the offsets' sum exactly zero.
    """
    t, h, w = _check(grid, ratio)
    base = base_size(grid, ratio)
    sizes = []
    for side, full in zip(base, (w, h)):
        bound = max(0, min(max_jitter, side - 1, full - side))
        sizes.append(side + zero_sum_jitter(t, bound, rng))
    return np.stack(sizes, axis=1)


def smm_track(grid, ratio, rng: np.random.Generator, max_speed: float = 1.0, max_jitter: int = 1):
    """Simulated motion: rectangle centres (T', 2) float (x, y) and sizes (T', 2) int (w, h), in tokens.

    The centre starts where the base rectangle fits, then moves each slice by
    a velocity drawn uniformly in [-max_speed, max_speed] tokens per slice on
    each axis, stopped at the grid's edges.
    """
    t, h, w = _check(grid, ratio)
    sizes = jittered_sizes(grid, ratio, rng, max_jitter)
    bw, bh = base_size(grid, ratio)
    start = np.array([rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)])
    velocity = rng.uniform(-max_speed, max_speed, (t - 1, 2))
    centres = [start]
    for v in velocity:
        centres.append(np.clip(centres[-1] + v, 0.0, [w, h]))
    return np.stack(centres), sizes


def _boxes(centres: np.ndarray, sizes: np.ndarray, grid) -> np.ndarray:
    """Rectangles (T', 4) int (x0, y0, x1, y1) inclusive, centred and shifted inside the grid."""
    _, h, w = grid
    x0 = np.clip(np.round(centres[:, 0] - sizes[:, 0] / 2), 0, w - sizes[:, 0]).astype(int)
    y0 = np.clip(np.round(centres[:, 1] - sizes[:, 1] / 2), 0, h - sizes[:, 1]).astype(int)
    return np.stack([x0, y0, x0 + sizes[:, 0] - 1, y0 + sizes[:, 1] - 1], axis=1)


def _take(order_keys: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Per slice, mask the first counts[j] tokens in lexicographic key order.

    order_keys: arrays (T', Hp*Wp), most significant LAST (np.lexsort order).
    Returns bool (T' * Hp * Wp,).
    """
    order = np.lexsort(order_keys, axis=-1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None], axis=1)
    return (rank < counts[:, None]).reshape(-1)


def rectangle_mask(
    boxes: np.ndarray, grid, counts: np.ndarray, rng: np.random.Generator, priority: np.ndarray | None = None
) -> np.ndarray:
    """Mask each slice's rectangle, then shrink or grow its border to counts[j] tokens.

    boxes: int (T', 4) (x0, y0, x1, y1); counts: int (T',); priority: float
    (T', Hp, Wp) or None. On the border ring being shrunk, tokens of low
    priority go first; on the ring being grown, tokens of high priority come
    first; ties go by distance to the rectangle's centre, then at random.
    Returns bool (N,).
    """
    t, h, w = grid
    ys = np.arange(h)[None, :, None]
    xs = np.arange(w)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    # Chebyshev ring: -depth inside (0 on the border), distance outside.
    ring = np.maximum(np.maximum(x0 - xs, xs - x1), np.maximum(y0 - ys, ys - y1))
    distance = np.hypot(2 * xs - x0 - x1, 2 * ys - y0 - y1)
    keys = [rng.random((t, h * w)), distance.reshape(t, -1)]
    if priority is not None:
        keys.append(-priority.reshape(t, -1))
    keys.append(ring.reshape(t, -1))
    return _take(keys, counts)


# ---------------------------------------------------------------- moving strategies


def smm_mask(
    grid,
    ratio,
    rng: np.random.Generator,
    sparse: bool = SMMOptions.sparse,
    max_speed: float = SMMOptions.max_speed,
    max_jitter: int = SMMOptions.max_jitter,
) -> np.ndarray:
    """Simulated-motion masking (MGM paper, Sec. 3.2).

    Dense: the rectangle of `smm_track`, exact count by the border rule
    (tokens nearer the centre first). Sparse: tokens drawn without replacement
    with probability falling off as exp(-distance / rectangle half-size) from
    the moving centre.
    """
    t, h, w = _check(grid, ratio)
    centres, sizes = smm_track(grid, ratio, rng, max_speed, max_jitter)
    counts = _slice_counts(num_masked("smm", grid, ratio), t, rng)
    if not sparse:
        return rectangle_mask(_boxes(centres, sizes, grid), grid, counts, rng)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    distance = np.hypot(xs[None] - centres[:, 0, None, None], ys[None] - centres[:, 1, None, None])
    scale = max(base_size(grid, ratio)) / 2
    gumbel = -np.log(-np.log(rng.random((t, h, w))))
    return _take([(distance / scale - gumbel).reshape(t, -1)], counts)


def mgm_mask(
    grid,
    ratio,
    rng: np.random.Generator,
    magnitude: np.ndarray,
    sparse: bool = MGMOptions.sparse,
    max_jitter: int = MGMOptions.max_jitter,
) -> np.ndarray:
    """Motion-guided masking (MGM paper, Sec. 3.3).

    magnitude: float (T', Hp, Wp) motion per token (see `guidance`). Dense:
    per slice a rectangle centred on the arg-max of magnitude (ties broken at
    random) with zero-sum size jitter, exact count by the border rule, most
    moving tokens first. Sparse: the top-magnitude tokens of each slice.
    """
    t, h, w = _check(grid, ratio)
    magnitude = np.asarray(magnitude, np.float32)
    if magnitude.shape != (t, h, w):
        raise ValueError(f"motion magnitude map has shape {magnitude.shape}, expected the token grid {(t, h, w)}")
    counts = _slice_counts(num_masked("mgm", grid, ratio), t, rng)
    if sparse:
        return _take([rng.random((t, h * w)), -magnitude.reshape(t, -1)], counts)
    flat = magnitude.reshape(t, -1)
    ties = flat >= flat.max(axis=1, keepdims=True)
    peak = np.argmax(ties * rng.random(flat.shape), axis=1)
    centres = np.stack([peak % w + 0.5, peak // w + 0.5], axis=1)
    sizes = jittered_sizes(grid, ratio, rng, max_jitter)
    return rectangle_mask(_boxes(centres, sizes, grid), grid, counts, rng, priority=magnitude)


MASKS: dict[str, Callable[..., np.ndarray]] = {
    "tube": tube_mask,
    "random": random_mask,
    "cube": cube_mask,
    "smm": smm_mask,
    "mgm": mgm_mask,
}


def make_mask(kind: str, grid, ratio: float, rng: np.random.Generator, magnitude=None, **options) -> np.ndarray:
    """Mask bool (N,) of strategy `kind`; mgm needs `magnitude` (T', Hp, Wp); `options`: the keys of
    the kind's options (`config.schema.mask_options`)."""
    options = dataclasses.asdict(mask_options(kind, options))
    if kind == "mgm":
        if magnitude is None:
            raise ValueError("mgm masks need a motion magnitude map (see motionmae.motion.masking.guidance)")
        return mgm_mask(grid, ratio, rng, magnitude, **options)
    return MASKS[kind](grid, ratio, rng, **options)


# ---------------------------------------------------------------- motion guidance


def token_magnitude(per_frame: np.ndarray, valid: np.ndarray, grid) -> np.ndarray:
    """Pool per-frame magnitudes onto the token grid: float32 (T', Hp, Wp).

    per_frame: float (T, h, w) on any spatial grid covering the clip (8x8
    vector cells, pixels); valid: bool (T,) frames that carry motion. A slice
    averages its valid frames (invalid ones are absent, not zero motion); a
    slice with none borrows the nearest slice that has some; no valid frame
    at all gives zeros. Space is area-averaged onto (Hp, Wp).
    """
    t_tokens, h, w = grid
    frames = len(per_frame)
    if frames % t_tokens:
        raise ValueError(f"{frames} frames do not split into {t_tokens} temporal token slices")
    valid = np.asarray(valid, bool).reshape(t_tokens, -1)
    n = valid.sum(axis=1)
    if not n.any():
        return np.zeros((t_tokens, h, w), np.float32)
    pooled = np.stack(
        [cv2.resize(np.asarray(f, np.float32), (w, h), interpolation=cv2.INTER_AREA) for f in per_frame]
    ).reshape(t_tokens, -1, h, w)
    slices = np.einsum("sfhw,sf->shw", pooled, valid.astype(np.float32)) / np.maximum(n, 1)[:, None, None]
    have = np.flatnonzero(n)
    nearest = have[np.abs(np.arange(t_tokens)[:, None] - have[None]).argmin(axis=1)]
    return slices[nearest]


def vector_magnitude(motion: np.ndarray, has_motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codec vectors (T, h8, w8, 2) px/frame -> per-frame magnitude (T, h8, w8) and validity (T,)."""
    return np.hypot(motion[..., 0], motion[..., 1]), np.asarray(has_motion, bool)


def flow_magnitude(
    flow: np.ndarray, frames: int, stride: int = 1, cuts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flow of a raw span -> magnitude per input frame (T, H, W) and validity (T,).

    flow: (F, H, W, 2) px, field f carrying raw frame f to f + 1; input frame i is raw
    frame i*stride. Frame i gets the mean magnitude of fields i*s .. i*s + s - 1, the
    motion over the raw frames from it to the next input frame (a token slice of frames
    2j, 2j+1 thus covers raw frames 2js .. 2js + 2s); fields across a shot cut (`cuts`,
    bool (F,)) are left out, and frames left with no field are invalid.
    """
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    usable = np.ones(len(flow), bool) if cuts is None else ~np.asarray(cuts[: len(flow)], bool)
    out = np.zeros((frames, *magnitude.shape[1:]), np.float32)
    valid = np.zeros(frames, bool)
    for i in range(frames):
        fields = magnitude[i * stride : (i + 1) * stride][usable[i * stride : (i + 1) * stride]]
        if len(fields):
            out[i], valid[i] = fields.mean(axis=0), True
    return out, valid


def after_cut(cuts: np.ndarray | None, frames: int, stride: int = 1) -> np.ndarray:
    """Bool (T,): input frame i (raw frame i*stride) lies across a shot cut from input frame i - 1,
    given the raw span's cut flags `cuts` bool (F,) (pair f: raw frames f, f + 1); all False without."""
    out = np.zeros(frames, bool)
    if cuts is not None:
        for i in range(1, frames):
            out[i] = bool(np.any(cuts[(i - 1) * stride : i * stride]))
    return out


def difference_magnitude(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (T, H, W, 3) -> absolute luma change since the previous frame (T, H, W); frame 0 invalid."""
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    change = np.stack([cv2.absdiff(now, before) for before, now in zip(gray[:-1], gray[1:])]).astype(np.float32)
    valid = np.arange(len(frames)) > 0
    return np.concatenate([np.zeros_like(change[:1]), change]), valid


def guidance(
    clip, grid, flow: np.ndarray | None = None, prefer: str = "mv", stride: int = 1, cuts: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """Per-token motion magnitude (T', Hp, Wp) of a clip and the source used.

    clip: anything with `frames` uint8 (T, H, W, 3), `motion` (T, h8, w8, 2)
    or None and `has_motion` bool (T,) or None (a `video.Clip`), already
    cropped like the frames, taken `stride` raw frames apart. flow: optional
    (F, H, W, 2) of that raw span (`flow_magnitude`; with stride 1, (T-1, H, W, 2)
    between the clip's frames). cuts: optional bool (F,), the span's shot cuts
    (pair f: raw frames f, f + 1); motion measured across one (vectors, flow or
    difference) is meaningless and left out, as for a frame without vectors.
    Tries `prefer` first, then the others in the order mv, flow, diff; mv
    counts as available when at least one frame has vectors (and no cut
    before it), diff always is (for clips of 2 frames or more).
    """
    if prefer not in SOURCES:
        raise UsageError(f"unknown guidance source {prefer!r}; choose from {', '.join(SOURCES)}")
    same_shot = ~after_cut(cuts, len(clip.frames), stride)
    for source in (prefer, *(s for s in SOURCES if s != prefer)):
        if (
            source == "mv"
            and clip.motion is not None
            and clip.has_motion is not None
            and (clip.has_motion & same_shot).any()
        ):
            magnitude, valid = vector_magnitude(clip.motion, clip.has_motion & same_shot)
        elif source == "flow" and flow is not None:
            magnitude, valid = flow_magnitude(flow, len(clip.frames), stride, cuts)
        elif source == "diff" and len(clip.frames) > 1:
            magnitude, valid = difference_magnitude(clip.frames)
            valid = valid & same_shot
        else:
            continue
        return token_magnitude(magnitude, valid, grid), source
    raise ValueError("a single-frame clip without motion vectors or flow gives no motion guidance")


# ---------------------------------------------------------------- data-loader side


@dataclass(frozen=True)
class MaskGenerator:
    """Picklable mask maker for data-loader workers.

    `MaskGenerator("mgm", grid=(8, 14, 14))(rng, magnitude)` or, from a decoded
    and augmented clip, `mask, source = gen.for_clip(clip, rng)`; source is
    "mv", "flow" or "diff" for mgm and "none" for strategies that ignore motion.
    `options` go to the strategy (the keys of its kind's options: `config.schema.mask_options`).
    """

    kind: str = "tube"
    ratio: float | None = None  # None: MASK_RATIO[kind]
    grid: tuple[int, int, int] = (8, 14, 14)
    prefer: str = "mv"  # guidance source tried first (mgm)
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        mask_options(self.kind, self.options)  # an unknown kind or option fails here, not in a loader worker
        if self.ratio is None:
            object.__setattr__(self, "ratio", MASK_RATIO[self.kind])
        object.__setattr__(self, "grid", _check(tuple(self.grid), self.ratio))

    @property
    def num_masked(self) -> int:
        return num_masked(self.kind, self.grid, self.ratio)  # type: ignore[arg-type]  # set by __post_init__

    @property
    def needs_motion(self) -> bool:
        return self.kind == "mgm"

    @property
    def needs_flow(self) -> bool:
        """The data set must load the span's flow: mgm guided by flow first."""
        return self.kind == "mgm" and self.prefer == "flow"

    def __call__(self, rng: np.random.Generator, magnitude: np.ndarray | None = None) -> np.ndarray:
        return make_mask(self.kind, self.grid, self.ratio, rng, magnitude, **self.options)  # type: ignore[arg-type]

    def for_clip(
        self,
        clip,
        rng: np.random.Generator,
        flow: np.ndarray | None = None,
        stride: int = 1,
        cuts: np.ndarray | None = None,
    ) -> tuple[np.ndarray, str]:
        """Mask bool (N,) for a clip, and the guidance source used (flow, stride, cuts: see `guidance`)."""
        if not self.needs_motion:
            return self(rng), "none"
        magnitude, source = guidance(clip, self.grid, flow, self.prefer, stride, cuts)
        return self(rng, magnitude), source
