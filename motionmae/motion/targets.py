"""Reconstruction targets, built on device at every step, and the masked loss.

Every builder reads the clip's dense raw span and returns one vector per token:

    frames (B, T_raw, H, W, 3) RGB, uint8 or float on the 0-255 scale
    flow   (B, T_raw - 1, H, W, 2) float32 (dx, dy) px; flow[:, t] carries raw frame t to t + 1
    cuts   (B, T_raw - 1) bool or None; True where raw frames t and t + 1 lie across a shot cut
      ->   target (B, N, D) float32, valid (B, N, D) bool (False: leave out of the loss)

A target read from flow that crosses a shot cut (a trajectory, or the flow of an input
frame) follows no real point, so its elements are not valid.

T input frames are sampled at stride s from the span: input frame i is raw frame
i*s, and token slice j (tubelet t = 2) starts at raw frame r_j = t*j*s. Tokens are in
VideoMAE order (time, rows, columns), N = T/t * H/16 * W/16. `builder.raw_span(T, s)`
is the T_raw a builder needs (the dataset reads that many frames and T_raw - 1 flow
fields), and `input_frames` picks the encoder's T frames out of the span.
`builder.span_reads(T, s)` says which of those frames and flow fields it reads at all,
so that the data loader can leave the others out (zeros).

`builder.parts` names slices of D; `target_loss` averages each over the valid
elements of masked tokens and sums them with `builder.loss_weights`.

    target = build_target("traj")                     # or "pixel", "hog", "hog+mbh", ...
    y, valid = target(frames, flow, num_frames=16, stride=2, cuts=cuts)
    loss, parts = target.loss(pred, y, valid, mask)
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from motionmae.config.schema import target_options
from motionmae.errors import UsageError
from motionmae.motion import hog as H
from motionmae.motion import trajectory as TR


def input_frames(frames: torch.Tensor, num_frames: int, stride: int) -> torch.Tensor:
    """The T input frames `(B, T, H, W, C)` (raw frames 0, s, 2s, ...) of a raw span `(B, T_raw, H, W, C)`."""
    return frames[:, 0 : (num_frames - 1) * stride + 1 : stride]


def to_tokens(x: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """`(B, T, H, W, C)` -> `(B, N, tubelet*patch*patch, C)` in VideoMAE token and pixel order."""
    b, t, h, w, c = x.shape
    x = x.reshape(b, t // tubelet, tubelet, h // patch, patch, w // patch, patch, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, tubelet * patch * patch, c)


def standardize(
    x: torch.Tensor,
    dims: tuple[int, ...],
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    unbiased: bool = False,
) -> torch.Tensor:
    """Zero mean and unit variance over `dims`, counting only where `weight` (0/1, broadcastable) is 1.

    Population variance: `(x - mean) / sqrt(var + eps)`. `unbiased=True` is the official MME
    release's PatchStd: `(x - mean) / (std + eps)` with the unbiased std (n - 1 in the
    denominator; a single value standardizes to 0).
    """
    if weight is None:
        weight = x.new_ones((1,) * x.dim())
    repeats = math.prod(x.shape[d] for d in dims if weight.shape[d] == 1)  # each weight entry stands for this many
    count = weight.sum(dims, keepdim=True) * repeats
    mean = (x * weight).sum(dims, keepdim=True) / count.clamp(min=1)
    centred = x - mean
    squares = (centred.square() * weight).sum(dims, keepdim=True)
    if unbiased:
        return centred.mul_(weight / ((squares / (count - 1).clamp(min=1)).sqrt() + eps))
    return centred.mul_(weight * (squares / count.clamp(min=1) + eps).rsqrt())


def dead_zone(displacement: torch.Tensor, width: float) -> torch.Tensor:
    """Gate `(..., L, 2)` px steps by their trajectory's net motion per step, `r = |mean over L|`.

    The gate is 0 for `r <= width/2`, 1 for `r >= width`, and linear between, so a
    trajectory that moves faster than `width` px per step keeps its steps unchanged (speed
    and direction), and one that drifts like flow noise around a still point becomes 0.
    """
    if width <= 0:
        return displacement
    net = displacement.mean(dim=-2, keepdim=True).norm(dim=-1, keepdim=True)
    return displacement * ((net - width / 2) / (width / 2)).clamp_(0, 1)


def _all_valid(target: torch.Tensor) -> torch.Tensor:
    """The `valid` of a target whose every element counts: a broadcast view (no memory)."""
    return torch.ones((1, 1, 1), dtype=torch.bool, device=target.device).expand(target.shape)


def _is_all_valid(valid: torch.Tensor) -> bool:
    """True for `_all_valid`'s view (all strides 0), without reading the tensor."""
    return all(stride == 0 for stride in valid.stride())


def _normalize(x: torch.Tensor, norm: str) -> torch.Tensor:
    """Baseline norms of `(B, N, ..., F)` token features: "token" (standardize per token), "l2" (per last axis),
    "none"."""
    if norm == "token":
        return standardize(x, tuple(range(2, x.dim())))
    if norm == "l2":
        return x / (x.norm(dim=-1, keepdim=True) + 1e-6)
    if norm == "none":
        return x
    raise UsageError(f"norm must be 'token', 'l2' or 'none', got {norm!r}")


def _crossing(cuts: torch.Tensor, first: torch.Tensor, count: int) -> torch.Tensor:
    """Bool `(B, len(first))`: a shot cut among flow fields `first[j] .. first[j] + count - 1`; cuts `(B, F)` bool."""
    seen = F.pad(cuts.long().cumsum(1), (1, 0))  # (B, F + 1): cuts before field f
    return seen[:, first + count] > seen[:, first]


def _check_span(builder, frames, flow, num_frames, stride, cuts=None):
    b, t_raw, h, w, _ = frames.shape
    need = builder.raw_span(num_frames, stride)
    if num_frames % builder.tubelet or h % builder.patch or w % builder.patch:
        raise ValueError(
            f"{num_frames} frames of {h}x{w} do not split into "
            f"{builder.tubelet}x{builder.patch}x{builder.patch} tubelets"
        )
    if t_raw < need:
        raise ValueError(f"{builder.name} target needs {need} raw frames for T={num_frames}, s={stride}; got {t_raw}")
    if builder.needs_flow and (flow is None or flow.shape[1] < need - 1 or tuple(flow.shape[2:4]) != (h, w)):
        got = None if flow is None else tuple(flow.shape)
        raise ValueError(
            f"{builder.name} target needs flow (B, {need - 1}, {h}, {w}, 2) for T={num_frames}, s={stride}; got {got}"
        )
    if cuts is not None and (cuts.dim() != 2 or cuts.shape[0] != b or cuts.shape[1] < need - 1):
        raise ValueError(
            f"cuts must be ({b}, >= {need - 1}) bool for T={num_frames}, s={stride}; got {tuple(cuts.shape)}"
        )


class Target:
    """Base of the builders: geometry, part layout and the loss. Subclasses set `dim` and `parts`."""

    name = ""
    needs_flow = False

    def __init__(self, tubelet: int = 2, patch: int = 16):
        self.tubelet, self.patch = tubelet, patch
        self.dim = 0
        self.parts: dict[str, slice] = {}
        self.loss_weights: dict[str, float] = {}
        self.element_weight: torch.Tensor | None = None  # (D,) or None
        self.reduction = "mean"  # of `target_loss`: "mean" per part, or "sum" (paper Eq. 1)

    def raw_span(self, num_frames: int, stride: int) -> int:
        """Raw frames this target needs; the inputs alone need `(T-1)*s + 1`."""
        return (num_frames - 1) * stride + 1

    def span_reads(self, num_frames: int, stride: int) -> tuple[list[int], list[int]]:
        """Places in the raw span of the frames and of the flow fields this target reads (sorted;
        the others may hold anything, zeros say). By default every one of them."""
        span = self.raw_span(num_frames, stride)
        return list(range(span)), list(range(span - 1)) if self.needs_flow else []

    def loss(self, pred, target, valid, mask):
        """`target_loss` with this builder's parts and weights."""
        return target_loss(
            pred, target, valid, mask, self.parts, self.loss_weights, self.element_weight, self.reduction
        )

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, parts={ {k: (s.start, s.stop) for k, s in self.parts.items()} })"


class TrajectoryTarget(Target):
    """The MME motion trajectory (DESIGN.md, "MME target"): per token, K trajectories of L steps.

    Layout of D = K*L*(2 + C*bins): position part `(K, L, 2)` (displacements px), then
    shape part `(K, L, C*bins)` (HOG at p_0 .. p_{L-1} on its raw frame), k-major.

    Options (paper behaviour by default; release = official XinyuSun/MME script; docs/fidelity.md):
      traj_len       L steps (paper 6, release 4)
      interpolate    True: steps of 1 raw frame; False: steps of s raw frames (flow at the
                     input stride, chained from the dense flow)
      shape          False: position part only ("w/o shape"; the release's K400 script)
      merge          None | "mean" | "max": merge the K trajectories into one (mean, or the
                     valid one with the longest path)
      traj_norm      "scale" (default: steps / traj_scale after the dead zone, so direction and
                     speed stay and still points give 0) | "token" (one mean/var over the token's
                     position part) | "across_k" (release PatchStd: each value across the K
                     trajectories, unbiased std) | "none" (px)
      traj_scale     px per step that "scale" maps to 1 (default 1.0)
      dead_zone      px per step: a trajectory whose net motion per step is below dead_zone/2
                     gives 0, above dead_zone it is kept as it is, linear between (`dead_zone`)
      shape_norm     "token" | "across_k" | "none" for the shape part (release: "none")
      hog_channels   "max" (9 bins) | "each" (9 per RGB channel, release)
      shape_step_weight  loss weight of shape steps after the first (release VolumeHOG: 0.1)
      validity       "trajectory" (each leaves the loss on its own) | "token" (release: all
                     K count when any stays in frame)
      lookup         "bilinear" | "nearest" (flow and HOG read at the nearest pixel) | "cell"
                     (flow at the nearest pixel, HOG of the 8x8 cell that contains the point:
                     the release's trajectory-aligned HOG)
      tracker        "paper" (sub-pixel positions, Eq. 6) | "release" (integer positions from
                     pixel (8i+4, 8j+4), flow rounded to whole px and not filtered, positions
                     clamped to the frame, in frame = p_0 .. p_{L-1} inside)
      hog_stride     1: exact trajectory-aligned HOG (the cell around every pixel position);
                     2 (default) or 4: cells kept every 2 or 4 px and read between them, 1.6x
                     faster on CPU, 3-4 % off on real video (`hog.cell_histograms`, docs/benchmarks.md)
      median         3x3 median filter on the flow; max_flow clamps it (px)
      position_weight, shape_weight  part weights of the loss (default 1 : 1)
    """

    name = "traj"
    needs_flow = True

    def __init__(
        self,
        *,
        traj_len,
        interpolate,
        shape,
        merge,
        traj_norm,
        traj_scale,
        dead_zone,
        shape_norm,
        hog_channels,
        shape_step_weight,
        validity,
        lookup,
        tracker,
        median,
        max_flow,
        position_weight,
        shape_weight,
        bins,
        cell,
        hog_stride,
        tubelet=2,
        patch=16,
    ):
        super().__init__(tubelet, patch)
        if traj_scale <= 0 or dead_zone < 0:
            raise UsageError(f"traj_scale must be > 0 and dead_zone >= 0 (px per step), got {traj_scale}, {dead_zone}")
        if tracker == "release" and not interpolate:
            raise UsageError("tracker 'release' follows dense flow only (interpolate: true)")
        self.traj_len, self.interpolate, self.shape, self.merge = traj_len, interpolate, shape, merge
        self.traj_norm, self.traj_scale, self.dead_zone = traj_norm, float(traj_scale), float(dead_zone)
        self.shape_norm, self.hog_channels, self.tracker = shape_norm, hog_channels, tracker
        self.validity, self.lookup, self.median, self.max_flow = validity, lookup, median, max_flow
        if lookup == "cell":
            hog_stride = cell  # the cell grid itself
        if cell % hog_stride:
            raise UsageError(f"hog_stride {hog_stride} must divide the cell size {cell}")
        self.bins, self.cell, self.hog_stride = bins, cell, hog_stride
        self.num_points = 1 if merge else (patch // cell) ** 2
        self.shape_dim = bins * (3 if hog_channels == "each" else 1) if shape else 0
        position_dim = self.num_points * traj_len * 2
        self.dim = position_dim + self.num_points * traj_len * self.shape_dim
        self.parts = {"position": slice(0, position_dim)}
        self.loss_weights = {"position": position_weight}
        if shape:
            self.parts["shape"] = slice(position_dim, self.dim)
            self.loss_weights["shape"] = shape_weight
        if shape and shape_step_weight != 1.0:
            step = torch.full((self.num_points, traj_len, self.shape_dim), shape_step_weight)
            step[:, 0] = 1.0
            self.element_weight = torch.cat((torch.ones(position_dim), step.flatten()))

    def raw_span(self, num_frames: int, stride: int) -> int:
        return TR.raw_span(num_frames, stride, self.traj_len, self.tubelet, self.interpolate)

    def span_reads(self, num_frames: int, stride: int) -> tuple[list[int], list[int]]:
        """Flow fields r_j .. r_j + L*step - 1 (the release tracker: L fields), HOG frames r_j + l*step."""
        step = 1 if self.interpolate else stride
        fields = self.traj_len if self.tracker == "release" else self.traj_len * step
        starts = [j * self.tubelet * stride for j in range(num_frames // self.tubelet)]  # r_j
        flows = {r + f for r in starts for f in range(fields)}
        frames = {r + step * k for r in starts for k in range(self.traj_len)} if self.shape else set()
        return sorted(frames), sorted(flows)

    def _tracks(self, flow, starts, points, step):
        """Steps `(B*S, L, P, 2)` px, the points HOG is read at `(B*S, L, P, 2)` px and in-frame flags `(B*S, P)`."""
        h, w = flow.shape[2:4]
        if self.tracker == "release":
            steps, read_at, valid = TR.track_release(flow, starts, self.traj_len, points, self.max_flow)
            return steps.flatten(0, 1), read_at.flatten(0, 1), valid.flatten(0, 1)
        flow_lookup = "bilinear" if self.lookup == "bilinear" else "nearest"
        dense = TR.track(flow, starts, self.traj_len * step, points, flow_lookup, self.median, self.max_flow)
        positions = dense[:, :, ::step].flatten(0, 1)  # (B*S, L + 1, P, 2)
        return positions[:, 1:] - positions[:, :-1], positions[:, :-1], TR.inside(dense, h, w).flatten(0, 1)

    @torch.no_grad()
    def __call__(self, frames, flow, num_frames, stride, cuts=None):
        _check_span(self, frames, flow, num_frames, stride, cuts)
        b, _, h, w, _ = frames.shape
        slices, steps = num_frames // self.tubelet, self.traj_len
        step = 1 if self.interpolate else stride
        starts = torch.arange(slices, device=frames.device) * self.tubelet * stride  # r_j

        # Tracking: all K points of all tokens of slice j start on raw frame r_j.
        points = TR.start_points(h, w, self.patch, self.cell, frames.device).expand(b, slices, -1, -1)
        moves, tracked, valid = self._tracks(flow.float().contiguous(), starts, points, step)
        if cuts is not None:  # across a shot cut a trajectory follows no point
            valid &= ~_crossing(cuts, starts, steps * step).flatten()[:, None]
        features = [moves]  # z^p: (B*S, L, P, 2)

        # Shape: HOG of the cell around p_l on raw frame r_j + l*step. Slices share raw frames, so
        # cell maps are made once per distinct frame, a chunk at a time, and read while in cache.
        if self.shape:
            visits = starts[:, None] + torch.arange(steps, device=frames.device) * step  # (S, L) raw frames
            used, visit = torch.unique(visits, return_inverse=True)
            batch = torch.arange(b, device=frames.device)
            rows = (batch[:, None] * frames.shape[1] + used).flatten()  # (B*U,) rows of frames.flatten(0, 1)
            which = (batch[:, None, None] * len(used) + visit).flatten()  # (B*S*L,) each group's place in rows
            tracked = tracked.flatten(0, 1)  # (B*S*L, P, 2)
            hogs = tracked.new_empty(*tracked.shape[:2], self.shape_dim)
            hog_lookup = "bilinear" if self.lookup == "bilinear" else "nearest"
            for first, cells in H.cell_histogram_chunks(
                frames.flatten(0, 1), self.cell, self.bins, self.hog_channels, self.hog_stride, index=rows
            ):
                groups = ((which >= first) & (which < first + len(cells))).nonzero()[:, 0]
                hogs[groups] = TR.sample_maps(
                    cells,
                    which[groups] - first,
                    tracked[groups],
                    hog_lookup,
                    offset=(self.cell - 1) / 2,
                    spacing=self.hog_stride,
                )
            features.append(hogs.view(b * slices, steps, *hogs.shape[1:]))  # z^s: (B*S, L, P, C*bins)

        # To tokens: (B, N, K, L, c) per part, valid (B, N, K).
        k = (self.patch // self.cell) ** 2
        features = [f.transpose(1, 2).reshape(b, -1, k, steps, f.shape[-1]) for f in features]
        valid = valid.reshape(b, -1, k)
        if self.merge:
            features, valid = self._merged(features, valid)
        if self.validity == "token":
            valid = valid.any(dim=2, keepdim=True).expand_as(valid)
        weight = valid[..., None, None].float()
        features[0] = self._position(features[0], weight)
        if self.shape:
            features[1] = _normalized(features[1], weight, self.shape_norm)
        target = torch.cat([f.flatten(2) for f in features], dim=-1)
        mask = torch.cat(
            [valid[..., None].expand(-1, -1, -1, steps * f.shape[-1]).flatten(2) for f in features], dim=-1
        )
        return target, mask

    def _position(self, moves, weight):
        """Normalized position part `(B, N, K, L, 2)` per `traj_norm`; 0 where `weight` is 0."""
        if self.traj_norm == "scale":
            return dead_zone(moves, self.dead_zone).mul_(weight / self.traj_scale)
        return _normalized(moves, weight, self.traj_norm)

    def _merged(self, features, valid):
        """One trajectory per token: the mean of the valid ones, or the valid one with the longest path."""
        weight = valid[..., None, None].float()
        if self.merge == "mean":
            count = weight.sum(2, keepdim=True).clamp(min=1)
            features = [(f * weight).sum(2, keepdim=True) / count for f in features]
        else:
            length = features[0].norm(dim=-1).sum(-1).masked_fill(~valid, -1.0)  # (B, N, K)
            best = length.argmax(dim=2)[:, :, None, None, None]
            features = [f.gather(2, best.expand(-1, -1, 1, *f.shape[3:])) for f in features]
        return features, valid.any(dim=2, keepdim=True)


def _normalized(f, weight, norm):
    """`(B, N, K, L, c)` standardized over the token ("token") or across its K trajectories ("across_k",
    unbiased std as the release's PatchStd), or left as it is ("none"); 0 where `weight` is 0."""
    if norm == "token":
        return standardize(f, (2, 3, 4), weight)
    if norm == "across_k":
        return standardize(f, (2,), weight, unbiased=True)
    return f * weight


def _standardize_pixels(x: torch.Tensor) -> torch.Tensor:
    """`(B, N, P, C)` pixels in [0, 1] standardized over P (unbiased std + 1e-6).

    One pass of sums of the values and their squares, taken relative to each token's first
    pixel so that float32 keeps them exact (within 1e-4 of the two-pass formula; a flat
    channel gives exact zeros); a third of the time of `torch.var_mean` on a CPU."""
    n = x.shape[2]
    shifted = x - x[:, :, :1]
    total, squares = shifted.sum(2, keepdim=True), shifted.square().sum(2, keepdim=True)
    mean = total / n
    var = ((squares - total * mean) / (n - 1)).clamp_(min=0)
    return shifted.sub_(mean).mul_((var.sqrt() + 1e-6).reciprocal())


class PixelTarget(Target):
    """VideoMAE: the tubelet's pixels `(t, 16, 16, 3)` in [0, 1], each channel standardized per token (`norm=True`).

    D = t*16*16*3 = 1536; the unbiased std plus 1e-6 as VideoMAE computes it.
    """

    name = "pixel"

    def __init__(self, *, norm, tubelet=2, patch=16):
        super().__init__(tubelet, patch)
        self.norm = norm
        self.dim = tubelet * patch * patch * 3
        self.parts, self.loss_weights = {"pixel": slice(0, self.dim)}, {"pixel": 1.0}

    def span_reads(self, num_frames: int, stride: int) -> tuple[list[int], list[int]]:
        return list(range(0, (num_frames - 1) * stride + 1, stride)), []

    @torch.no_grad()
    def __call__(self, frames, flow, num_frames, stride, cuts=None):
        _check_span(self, frames, flow, num_frames, stride, cuts)
        x = to_tokens(input_frames(frames, num_frames, stride).float() / 255, self.tubelet, self.patch)
        if self.norm:
            x = _standardize_pixels(x)
        x = x.flatten(2)
        return x, _all_valid(x)


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB on [0, 1]: the encoder's input normalization (VideoMAE)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HOGTarget(Target):
    """MaskFeat: HOG of the tubelet's middle input frame (raw r_j + (t//2)*s), 9 bins per RGB channel.

    Layout `(cells, 3*bins)`, cells row-major: D = 4*27 = 108. `norm`: "none" (MME's
    recipe: no L2), "l2" (per cell and channel, MaskFeat) or "token". `style`: "maskfeat"
    (`hog.hog` of the frame on [0, 1], cell sums) or "release" (the official MME release's
    'base' HOG target: `hog.release_hog` of the ImageNet-normalized frame, cell means).
    """

    name = "hog"

    def __init__(self, *, norm, style, bins, cell, tubelet=2, patch=16):
        super().__init__(tubelet, patch)
        self.norm, self.style, self.bins, self.cell = norm, style, bins, cell
        self.dim = (patch // cell) ** 2 * 3 * bins
        self.parts, self.loss_weights = {"hog": slice(0, self.dim)}, {"hog": 1.0}

    def span_reads(self, num_frames: int, stride: int) -> tuple[list[int], list[int]]:
        return list(range((self.tubelet // 2) * stride, (num_frames - 1) * stride + 1, self.tubelet * stride)), []

    @torch.no_grad()
    def __call__(self, frames, flow, num_frames, stride, cuts=None):
        _check_span(self, frames, flow, num_frames, stride, cuts)
        b = frames.shape[0]
        middle = frames[:, (self.tubelet // 2) * stride : (num_frames - 1) * stride + 1 : self.tubelet * stride]
        images = middle.permute(0, 1, 4, 2, 3).flatten(0, 1).float()
        if self.style == "release":  # of the ImageNet-normalized frame, as the encoder sees it
            cells = H.release_hog(images, self.cell, self.bins, [1 / (255 * s) for s in IMAGENET_STD])
        else:
            cells = H.hog(images / 255, self.cell, self.bins, channels="each")  # (B*S, 3*bins, Hc, Wc)
        cells = cells.view(b, -1, *cells.shape[1:]).permute(0, 1, 3, 4, 2)
        x = to_tokens(cells, 1, self.patch // self.cell)  # (B, N, K, 3*bins)
        x = _normalize(x.unflatten(-1, (3, self.bins)), self.norm).flatten(2)
        return x, _all_valid(x)


class _FlowTarget(Target):
    """Shared by flow, HOF and MBH: features of the flow leaving each of the tubelet's input frames."""

    needs_flow = True

    def raw_span(self, num_frames: int, stride: int) -> int:
        return (num_frames - 1) * stride + 2

    def span_reads(self, num_frames: int, stride: int) -> tuple[list[int], list[int]]:
        return [], list(range(0, (num_frames - 1) * stride + 1, stride))

    def _input_flow(self, flow, num_frames, stride):
        """`(B, T, H, W, 2)`: flow[:, i*s], carrying input frame i to the next raw frame."""
        return input_frames(flow, num_frames, stride).float()

    def _valid(self, x, cuts, num_frames, stride):
        """`valid` of features x `(B, N, D)`: False for the tokens whose input flow crosses a shot cut."""
        if cuts is None or not cuts.any():
            return _all_valid(x)
        first = torch.arange(num_frames, device=cuts.device) * stride
        across = _crossing(cuts, first, 1).view(x.shape[0], -1, self.tubelet).any(-1)  # (B, T')
        tokens = across.repeat_interleave(x.shape[1] // across.shape[1], dim=1)  # (B, N)
        return ~tokens[..., None].expand(x.shape)


class FlowTarget(_FlowTarget):
    """The tubelet's flow `(t, 16, 16, 2)` px, standardized per token (`norm="token"`) or raw ("none"). D = 1024."""

    name = "flow"

    def __init__(self, *, norm, tubelet=2, patch=16):
        super().__init__(tubelet, patch)
        self.norm = norm
        self.dim = tubelet * patch * patch * 2
        self.parts, self.loss_weights = {"flow": slice(0, self.dim)}, {"flow": 1.0}

    @torch.no_grad()
    def __call__(self, frames, flow, num_frames, stride, cuts=None):
        _check_span(self, frames, flow, num_frames, stride, cuts)
        x = _normalize(
            to_tokens(self._input_flow(flow, num_frames, stride), self.tubelet, self.patch), self.norm
        ).flatten(2)
        return x, self._valid(x, cuts, num_frames, stride)


class HOFTarget(_FlowTarget):
    """Histograms of optical flow: per 8x8 cell of each input frame, flow directions over 0-360 deg
    in `bins` bins weighted by length, averaged over the cell's pixels (px). Layout `(t, cells, bins)`,
    D = 2*4*9 = 72."""

    name = "hof"

    def __init__(self, *, norm, bins, cell, tubelet=2, patch=16):
        super().__init__(tubelet, patch)
        self.norm, self.bins, self.cell = norm, bins, cell
        self.dim = tubelet * (patch // cell) ** 2 * bins
        self.parts, self.loss_weights = {"hof": slice(0, self.dim)}, {"hof": 1.0}

    def _histograms(self, vectors):
        """`(M, 2, H, W)` flow -> per-pixel `(M, bins, H, W)`."""
        return H.orientation_histograms(vectors[:, :1], vectors[:, 1:], self.bins, signed=True).flatten(1, 2)

    @torch.no_grad()
    def __call__(self, frames, flow, num_frames, stride, cuts=None):
        _check_span(self, frames, flow, num_frames, stride, cuts)
        b = flow.shape[0]
        vectors = self._input_flow(flow, num_frames, stride).permute(0, 1, 4, 2, 3).flatten(0, 1)
        cells = H.cell_grid(self._histograms(vectors), self.cell) / self.cell**2  # per-pixel mean
        cells = cells.view(b, num_frames, *cells.shape[1:]).permute(0, 1, 3, 4, 2)
        x = to_tokens(cells, self.tubelet, self.patch // self.cell)  # (B, N, t*K, F)
        x = _normalize(x.unflatten(-1, (-1, self.bins)), self.norm).flatten(2)
        return x, self._valid(x, cuts, num_frames, stride)


class MBHTarget(HOFTarget):
    """Motion boundary histograms: HOG (0-180 deg) of the flow's x and y components, per 8x8 cell
    of each input frame. Layout `(t, cells, [x, y], bins)`, D = 2*4*2*9 = 144."""

    name = "mbh"

    def __init__(self, *, norm, bins, cell, tubelet=2, patch=16):
        super().__init__(norm=norm, bins=bins, cell=cell, tubelet=tubelet, patch=patch)
        self.dim *= 2
        self.parts, self.loss_weights = {"mbh": slice(0, self.dim)}, {"mbh": 1.0}

    def _histograms(self, vectors):
        dx, dy = H.gradients(vectors)
        return H.orientation_histograms(dx, dy, self.bins).flatten(1, 2)


class CombinedTarget(Target):
    """Concatenation of targets, e.g. "hog+mbh" (the paper's Table 5); each keeps its own loss parts."""

    def __init__(self, targets: list[Target]):
        super().__init__(targets[0].tubelet, targets[0].patch)
        self.targets = targets
        self.name = "+".join(t.name for t in targets)
        self.needs_flow = any(t.needs_flow for t in targets)
        weights = []
        for t in targets:
            for part, s in t.parts.items():
                key = part if part not in self.parts else f"{t.name}.{part}"
                self.parts[key] = slice(self.dim + s.start, self.dim + s.stop)
                self.loss_weights[key] = t.loss_weights[part]
            weights.append(t.element_weight if t.element_weight is not None else torch.ones(t.dim))
            self.dim += t.dim
        if any(t.element_weight is not None for t in targets):
            self.element_weight = torch.cat(weights)

    def raw_span(self, num_frames: int, stride: int) -> int:
        return max(t.raw_span(num_frames, stride) for t in self.targets)

    def span_reads(self, num_frames: int, stride: int) -> tuple[list[int], list[int]]:
        reads = [t.span_reads(num_frames, stride) for t in self.targets]
        return sorted({i for frames, _ in reads for i in frames}), sorted({i for _, flows in reads for i in flows})

    def __call__(self, frames, flow, num_frames, stride, cuts=None):
        outputs = [t(frames, flow, num_frames, stride, cuts) for t in self.targets]
        return torch.cat([y for y, _ in outputs], dim=-1), torch.cat([v for _, v in outputs], dim=-1)


TARGETS = {
    "traj": TrajectoryTarget,
    "pixel": PixelTarget,
    "hog": HOGTarget,
    "flow": FlowTarget,
    "hof": HOFTarget,
    "mbh": MBHTarget,
}

# The official MME release's Kinetics-400 pretraining script (XinyuSun/MME, target 'idt',
# variant 'base'): `build_target("hog+traj", **RELEASE)` = HOG of each tubelet's second frame
# plus 4-step trajectories without a shape part, PatchStd, token validity, summed loss
# (motionmae/configs/mme-release-k400.yaml; docs/fidelity.md lists what still differs).
RELEASE_TRAJ = dict(traj_len=4, shape=False, traj_norm="across_k", validity="token", tracker="release")
RELEASE = dict(RELEASE_TRAJ, style="release", loss_reduction="sum")


def build_target(name: str, tubelet: int = 2, patch: int = 16, **options) -> Target:
    """Target builder by name: "traj", "pixel", "hog", "flow", "hof", "mbh", or several joined by "+".

    `options` are a config's `target.options` (`config.schema.target_options`: their
    defaults and the valid keys of each kind); for a combination each part receives the
    options its kind has. `loss_reduction` (`target_loss`): "mean" (each part averaged
    over its elements, parts added with their weights) or "sum" (paper Eq. 1: squared
    errors summed over each masked token's elements, averaged over masked tokens).
    """
    parts, reduction = target_options(name, options)
    targets = [
        TARGETS[n](**dataclasses.asdict(typed), tubelet=tubelet, patch=patch)
        for n, typed in zip(name.split("+"), parts)
    ]
    target = targets[0] if len(targets) == 1 else CombinedTarget(targets)
    target.reduction = reduction
    return target


def target_loss(pred, target, valid, mask, parts, weights=None, element_weight=None, reduction="mean"):
    """Masked MSE, each part averaged over its valid elements of masked tokens, then summed with `weights`.

    pred:   (B, N, D) for all tokens, or (B, M, D) for the M masked tokens in token order
    target, valid: (B, N, D) from a builder; mask: (B, N) bool, True = masked
    parts:  name -> slice of D; weights: name -> float (default 1 each)
    element_weight: optional (D,) weight of each element within its part's mean
    reduction: "mean" as above, or "sum": a part's loss is the sum of its weighted squared
        errors over valid elements divided by the number of masked tokens (the paper's
        Eq. 1 and Eq. 7, and the release: a token's 9 shape values per step weigh 9:2
        against its 2 position values)
    Returns (loss, {part: detached part loss}).
    """
    b, n, d = target.shape
    if pred.shape[1] != n:
        target = target[mask].view(b, -1, d)
    if reduction == "sum":
        tokens = max(int(mask.sum()), 1)
    if element_weight is None and _is_all_valid(valid) and pred.shape[1] != n and reduction == "mean":
        # every element of every masked token counts (pixel, HOG, flow targets): plain means,
        # without the (B, M, D) weight tensors, which cost a few hundred MB at ViT-B sizes
        losses = {name: F.mse_loss(pred[..., part], target[..., part].to(pred.dtype)) for name, part in parts.items()}
        total = sum((1.0 if weights is None else weights[name]) * value for name, value in losses.items())
        return total, {name: value.detach() for name, value in losses.items()}
    valid = valid & mask[..., None]
    if pred.shape[1] != n:
        valid = valid[mask].view(b, -1, d)
    weight = valid.to(pred.dtype)
    if element_weight is not None:
        weight = weight * element_weight.to(weight)
    error = (pred - target.to(pred.dtype)) ** 2 * weight
    total, losses = 0.0, {}
    for name, part in parts.items():
        count = tokens if reduction == "sum" else weight[..., part].sum().clamp(min=1e-12)
        losses[name] = error[..., part].sum() / count
        total = total + (1.0 if weights is None else weights[name]) * losses[name]
    return total, {name: value.detach() for name, value in losses.items()}
