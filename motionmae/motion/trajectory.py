"""Point tracking on dense optical flow: the trajectories behind the MME target.

Coordinates are pixel positions `(x, y)` with pixel centres at integers, so
pixel `(x, y)` is `image[y, x]` (OpenCV's convention, the one flow fields use).
The 8x8 cell whose top-left pixel is `(8i, 8j)` is centred at `(8i + 3.5, 8j + 3.5)`,
and a frame covers `[-0.5, W - 0.5] x [-0.5, H - 0.5]`.

Tracking follows the paper (Appendix B, Eq. 6): `p_{t+1} = p_t + (M * w_t)(p_t)`,
with `w_t` the flow carrying raw frame t to t + 1, `M` a 3x3 median filter, and the
filtered field read at the sub-pixel position (bilinear, or nearest pixel as in the
official release).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Compare-exchange network whose middle element is the median of 9 values
# (Paeth, Graphics Gems; the one OpenCV uses): 19 min/max pairs, no sort.
_MEDIAN9 = (
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 1),
    (3, 4),
    (6, 7),
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 3),
    (5, 8),
    (4, 7),
    (3, 6),
    (1, 4),
    (2, 5),
    (4, 7),
    (4, 2),
    (6, 4),
    (4, 2),
)


def raw_span(num_frames: int, stride: int, traj_len: int, tubelet: int = 2, interpolate: bool = True) -> int:
    """Raw frames a clip of `num_frames` input frames at `stride` needs for trajectory targets.

    Token slice j starts at raw frame `r = tubelet*j*stride`. Its trajectories take
    `traj_len` steps of `step` raw frames (1 with interpolation, `stride` without): HOG
    is read on frames `r + l*step` (l < L) and flow `r .. r + L*step - 1` is used, whose
    last field carries to frame `r + L*step`. So the span is `(T - t)*s + L*step + 1`
    frames (`T_raw - 1` flow fields), and never less than the inputs' `(T - 1)*s + 1`.
    """
    step = 1 if interpolate else stride
    last_start = (num_frames - tubelet) * stride
    return max(last_start + traj_len * step + 1, (num_frames - 1) * stride + 1)


def median3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median filter of `(M, C, H, W)` maps, replicated border; same shape out."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return _median9([padded[..., i : i + height, j : j + width] for i in range(3) for j in range(3)])


def start_points(height: int, width: int, patch: int = 16, cell: int = 8, device=None) -> torch.Tensor:
    """Cell centres of every token, `(Hp*Wp*K, 2)` float32 `(x, y)` px.

    Order: token rows, token columns, then the K = (patch/cell)^2 cells of the token
    row-major, so `.view(Hp*Wp, K, 2)` groups the points of each token.
    """
    k = patch // cell
    ys = torch.arange(height // cell, device=device, dtype=torch.float32) * cell + (cell - 1) / 2
    xs = torch.arange(width // cell, device=device, dtype=torch.float32) * cell + (cell - 1) / 2
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (Hc, Wc, 2)
    grid = grid.view(height // patch, k, width // patch, k, 2).permute(0, 2, 1, 3, 4)
    return grid.reshape(-1, 2)


def sample(field: torch.Tensor, points: torch.Tensor, mode: str = "bilinear", offset: float = 0.0) -> torch.Tensor:
    """Read `(M, C, H, W)` maps at `(M, P, 2)` positions `(x, y)` px -> `(M, P, C)`.

    Map entry `[i, j]` sits at position `(j + offset, i + offset)`; positions outside
    read the nearest border value. `mode`: "bilinear" or "nearest".
    """
    height, width = field.shape[-2:]
    u = points - offset
    grid = torch.stack((2 * u[..., 0] / max(width - 1, 1) - 1, 2 * u[..., 1] / max(height - 1, 1) - 1), dim=-1)
    values = F.grid_sample(
        field, grid[:, :, None].to(field.dtype), mode=mode, padding_mode="border", align_corners=True
    )
    return values[..., 0].transpose(1, 2)


def sample_maps(
    maps: torch.Tensor,
    which: torch.Tensor,
    points: torch.Tensor,
    mode: str = "bilinear",
    offset: float = 0.0,
    spacing: float = 1.0,
) -> torch.Tensor:
    """Read channels-last maps `(M, H, W, C)` at `(x, y)` px positions `(Q, P, 2)`, group q on map `which[q]`
    -> `(Q, P, C)`.

    Map entry `[i, j]` sits at position `(spacing*j + offset, spacing*i + offset)`. Same reads as
    `sample` (border clamp, bilinear or nearest), but many groups share a map without copying it.
    """
    _, height, width, channels = maps.shape
    u = ((points[..., 0] - offset) / spacing).clamp(0, width - 1)
    v = ((points[..., 1] - offset) / spacing).clamp(0, height - 1)
    flat = maps.reshape(-1, channels)
    first = which.view(-1, 1) * (height * width)  # (Q, 1): index of each group's map entry [0, 0]

    def read(index):
        return flat.index_select(0, index.view(-1)).view(*index.shape, channels)

    if mode == "nearest":
        return read(first + torch.round(v).long() * width + torch.round(u).long())
    x0 = torch.floor(u).clamp(max=max(width - 2, 0))
    y0 = torch.floor(v).clamp(max=max(height - 2, 0))
    fx, fy = (u - x0)[..., None], (v - y0)[..., None]
    corner = first + y0.long() * width + x0.long()
    right, below = min(1, width - 1), min(1, height - 1) * width
    top = torch.lerp(read(corner), read(corner + right), fx)
    bottom = torch.lerp(read(corner + below), read(corner + below + right), fx)
    return torch.lerp(top, bottom, fy)


def _median9(v: list[torch.Tensor]) -> torch.Tensor:
    for a, b in _MEDIAN9:
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[4]


def flow_at(
    flow: torch.Tensor,
    frame: torch.Tensor,
    points: torch.Tensor,
    lookup: str = "bilinear",
    median: bool = True,
    max_flow: float | None = None,
) -> torch.Tensor:
    """Flow read at sub-pixel points, 3x3-median-filtered on the fly.

    flow `(B, F, H, W, 2)` px; frame `(S,)` long: which field each point group reads;
    points `(B, S, P, 2)` px -> `(B, S, P, 2)` px. Equals `sample(median3x3(field))` with
    the field clamped to `max_flow`, but filters only the 4x4 pixels each bilinear read
    touches (the one pixel for `lookup="nearest"`), not the whole field.
    """
    b, _, height, width, _ = flow.shape
    x = points[..., 0].clamp(0, width - 1)
    y = points[..., 1].clamp(0, height - 1)
    if lookup == "nearest":
        x0, y0, span = torch.round(x), torch.round(y), 1
    else:
        x0, y0, span = torch.floor(x), torch.floor(y), 2
    offsets = torch.arange(-1, span + 1, device=flow.device) if median else torch.arange(span, device=flow.device)
    offsets = offsets.view(-1, 1, 1, 1)
    xs = (x0.long() + offsets).clamp(0, width - 1)  # (n, B, S, P); replicated border, as the dense filter pads
    ys = (y0.long() + offsets).clamp(0, height - 1)
    fields = torch.arange(b, device=flow.device).view(-1, 1, 1) * flow.shape[1] + frame.view(1, -1, 1)  # (B, S, 1)
    index = (fields * height + ys[:, None]) * width + xs[None]  # (n, n, B, S, P): window rows, columns first
    pairs = flow.float().reshape(-1, 2).view(torch.int64).view(-1)  # (dx, dy) as one 8-byte value: fast 1-D gather
    window = pairs.index_select(0, index.view(-1)).view(torch.float32).view(*index.shape, 2)
    if max_flow is not None:
        window = window.clamp(-max_flow, max_flow)
    if median:  # the span x span medians at once, from the 9 shifted span x span views
        window = _median9([window[u : u + span, v : v + span] for u in range(3) for v in range(3)])
    if lookup == "nearest":
        return window[0, 0]
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = window[0, 0] * (1 - fx) + window[0, 1] * fx
    bottom = window[1, 0] * (1 - fx) + window[1, 1] * fx
    return top * (1 - fy) + bottom * fy


def track(
    flow: torch.Tensor,
    starts: torch.Tensor,
    steps: int,
    points: torch.Tensor,
    lookup: str = "bilinear",
    median: bool = True,
    max_flow: float | None = None,
) -> torch.Tensor:
    """Follow points through `steps` consecutive flow fields: `p_{t+1} = p_t + (M * w_t)(p_t)`.

    flow `(B, F, H, W, 2)` px; starts `(S,)` long: group s starts on raw frame starts[s] and
    reads fields starts[s], starts[s] + 1, ...; points `(B, S, P, 2)` px at those frames.
    Returns positions `(B, S, steps + 1, P, 2)` px, start included.
    """
    positions = [points]
    for i in range(steps):
        positions.append(positions[-1] + flow_at(flow, starts + i, positions[-1], lookup, median, max_flow))
    return torch.stack(positions, dim=2)


def track_release(
    flow: torch.Tensor, starts: torch.Tensor, steps: int, points: torch.Tensor, max_flow: float | None = 20.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The official MME release's tracker on whole pixels: no median filter, no sub-pixel reads.

    flow `(B, F, H, W, 2)` px, rounded to whole px and clamped to `max_flow`; starts `(S,)` as in
    `track`; points `(B, S, P, 2)` cell centres `(8i + 3.5, 8j + 3.5)`, which start on pixel
    `(8i + 4, 8j + 4)`. Each step checks that the point is in the frame, clamps it to the
    frame, reads the flow at its pixel and moves by it. Returns the steps `(B, S, steps, P, 2)`
    px, the clamped pixels read `(B, S, steps, P, 2)` and in-frame flags `(B, S, P)` (True when
    p_0 .. p_{steps-1} are all in the frame; the last position is not checked).
    """
    b, _, height, width, _ = flow.shape
    batch = torch.arange(b, device=flow.device).view(-1, 1, 1)
    p = torch.floor(points) + 1
    valid = torch.ones(p.shape[:-1], dtype=torch.bool, device=flow.device)
    moves, reads = [], []
    for i in range(steps):
        x, y = p[..., 0], p[..., 1]
        valid &= (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        p = torch.stack((x.clamp(0, width - 1), y.clamp(0, height - 1)), dim=-1)
        field = (starts + i).view(1, -1, 1)
        move = flow[batch, field, p[..., 1].long(), p[..., 0].long()].round()
        if max_flow is not None:
            move = move.clamp(-max_flow, max_flow)
        moves.append(move)
        reads.append(p)
        p = p + move
    return torch.stack(moves, dim=2), torch.stack(reads, dim=2), valid


def inside(positions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """True where a trajectory `(..., S, P, 2)` stays in the frame at every step -> `(..., P)`."""
    x, y = positions[..., 0], positions[..., 1]
    ok = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    return ok.all(dim=-2)
