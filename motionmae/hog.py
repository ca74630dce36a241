"""Histograms of oriented gradients (and of flow) in torch, on CPU or GPU.

Recipe (Dalal & Triggs; MaskFeat; MME Appendix C without the L2 block norm):
Sobel gradients by convolution, orientation bins over 0-180 deg (unsigned; bin i
centred at (i + 0.5) * 180/bins deg), each pixel's magnitude split linearly between
its two nearest bins (scatter), then summed over 8x8 cells. Angles are measured
in image axes (x right, y down). Images are float `(M, C, H, W)` in [0, 1]; a
histogram value is the sum of the gradient magnitudes (intensity/px) the cell's
pixels vote into that bin, so a cell on a strong edge reaches a few units.

`cell_map` gives the histogram of the cell around *every* position (a box filter),
so trajectory-aligned HOG is a bilinear read of that map at the tracked point; at
cell centres it equals the ordinary cell grid of `cell_grid`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives `(d/dx, d/dy)` of `(M, C, H, W)` images, each `(M, C, H, W)`, per px.

    Written as separable differences and sums of shifted views (replicated border);
    on CPU this is several times faster than a 1-channel conv2d.
    """
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    across = padded[..., :, 2:] - padded[..., :, :-2]  # central difference along x, (H+2, W)
    down = padded[..., 2:, :] - padded[..., :-2, :]  # along y, (H, W+2)
    dx = (across[..., :-2, :] + 2 * across[..., 1:-1, :] + across[..., 2:, :]) / 8
    dy = (down[..., :, :-2] + 2 * down[..., :, 1:-1] + down[..., :, 2:]) / 8
    return dx, dy


def orientation_histograms(dx: torch.Tensor, dy: torch.Tensor, bins: int = 9, signed: bool = False) -> torch.Tensor:
    """Per-pixel histograms of vectors `(dx, dy)`, each `(M, C, H, W)` -> `(M, C, bins, H, W)`.

    Bins cover 0-180 deg (`signed=False`, gradients) or 0-360 deg (`signed=True`, flow
    vectors for HOF); the vector length is split linearly between the two nearest bins.
    """
    period = 2 * math.pi if signed else math.pi
    magnitude = torch.hypot(dx, dy)
    position = torch.remainder(torch.atan2(dy, dx), period) * (bins / period) - 0.5
    low = torch.floor(position)
    frac = position - low
    low = torch.remainder(low, bins).long()
    hist = torch.zeros(dx.shape[:2] + (bins,) + dx.shape[2:], dtype=dx.dtype, device=dx.device)
    hist.scatter_add_(2, low[:, :, None], ((1 - frac) * magnitude)[:, :, None])
    hist.scatter_add_(2, torch.remainder(low + 1, bins)[:, :, None], (frac * magnitude)[:, :, None])
    return hist


def pixel_hog(images: torch.Tensor, bins: int = 9, channels: str = "max") -> torch.Tensor:
    """Per-pixel gradient histograms of `(M, 3, H, W)` images -> `(M, C*bins, H, W)`.

    `channels="max"`: one histogram from the colour channel with the strongest gradient
    at each pixel (Dalal & Triggs), C = 1. `channels="each"`: one per channel (MaskFeat,
    the official MME release), C = 3, channel-major.
    """
    dx, dy = gradients(images)
    if channels == "max":
        dx, dy = _strongest_channel(dx, dy)
    elif channels != "each":
        raise ValueError(f"channels must be 'max' or 'each', got {channels!r}")
    return orientation_histograms(dx, dy, bins).flatten(1, 2)


def _strongest_channel(dx: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the `(dx, dy)` of the channel with the largest magnitude (first on ties) -> `(M, 1, H, W)` each."""
    energy = dx * dx + dy * dy
    best_x, best_y, best = dx[:, :1], dy[:, :1], energy[:, :1]
    for c in range(1, dx.shape[1]):
        better = energy[:, c:c + 1] > best
        best_x = torch.where(better, dx[:, c:c + 1], best_x)
        best_y = torch.where(better, dy[:, c:c + 1], best_y)
        best = torch.where(better, energy[:, c:c + 1], best)
    return best_x, best_y


def cell_grid(hist: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Sum of `(M, F, H, W)` per-pixel histograms over non-overlapping cells -> `(M, F, H/cell, W/cell)`."""
    return F.avg_pool2d(hist, cell, divisor_override=1)


def cell_map(hist: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Sum over the cell at every offset -> `(M, F, H - cell + 1, W - cell + 1)`.

    Entry `[i, j]` is the cell with top-left pixel `(j, i)`, centred at position
    `(j + (cell-1)/2, i + (cell-1)/2)`: read it with `trajectory.sample(..., offset=(cell-1)/2)`.
    """
    across = F.pad(hist, (1, 0)).cumsum(-1)  # running sums: a window is the difference of two
    across = across[..., cell:] - across[..., :-cell]
    down = F.pad(across, (0, 0, 1, 0)).cumsum(-2)
    return down[..., cell:, :] - down[..., :-cell, :]


def hog(images: torch.Tensor, cell: int = 8, bins: int = 9, channels: str = "max") -> torch.Tensor:
    """HOG of `(M, 3, H, W)` images in [0, 1] -> `(M, C*bins, H/cell, W/cell)`."""
    return cell_grid(pixel_hog(images, bins, channels), cell)
