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
cell centres it equals the ordinary cell grid of `cell_grid`. `cell_histograms` is
the fast form the MME target uses: straight from uint8 frames to a channels-last map,
in cache-sized chunks, optionally kept only every `stride` px (see its docstring).
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
    dx, dy = _sobel(images)
    return dx.mul_(0.125), dy.mul_(0.125)


def _sobel(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8 x `gradients` (the integer Sobel sums, exact for integer-valued images)."""
    return _sobel_of_padded(F.pad(images, (1, 1, 1, 1), mode="replicate"))


def _sobel_of_padded(padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_sobel` of images already padded by one replicated pixel on each side."""
    across = padded[..., :, 2:] - padded[..., :, :-2]  # central difference along x, (H+2, W)
    down = padded[..., 2:, :] - padded[..., :-2, :]  # along y, (H, W+2)
    dx = torch.add(across[..., :-2, :], across[..., 1:-1, :], alpha=2).add_(across[..., 2:, :])
    dy = torch.add(down[..., :, :-2], down[..., :, 1:-1], alpha=2).add_(down[..., :, 2:])
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
        dx, dy, _ = _strongest_channel(dx, dy)
    elif channels != "each":
        raise ValueError(f"channels must be 'max' or 'each', got {channels!r}")
    return orientation_histograms(dx, dy, bins).flatten(1, 2)


def _strongest_channel(dx: torch.Tensor, dy: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, ...]:
    """Per pixel, the `(dx, dy)` of the channel along `dim` with the largest magnitude (first on ties), and its squared
    magnitude; each of size 1 on `dim`. The pick is a lerp with weight 0 or 1: exact, and faster than `torch.where`
    on CPU.
    """
    energy = torch.addcmul(dx * dx, dy, dy)
    best_x, best_y, best = (t.narrow(dim, 0, 1).clone() for t in (dx, dy, energy))
    better = torch.empty_like(best)
    for c in range(1, dx.shape[dim]):
        candidate = energy.narrow(dim, c, 1)
        torch.gt(candidate, best, out=better)
        best_x.lerp_(dx.narrow(dim, c, 1), better)
        best_y.lerp_(dy.narrow(dim, c, 1), better)
        torch.maximum(best, candidate, out=best)
    return best_x, best_y, best


def cell_grid(hist: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Sum of `(M, F, H, W)` per-pixel histograms over non-overlapping cells -> `(M, F, H/cell, W/cell)`."""
    return F.avg_pool2d(hist, cell, divisor_override=1)


def cell_map(hist: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Sum over the cell at every offset -> `(M, F, H - cell + 1, W - cell + 1)`.

    Entry `[i, j]` is the cell with top-left pixel `(j, i)`, centred at position
    `(j + (cell-1)/2, i + (cell-1)/2)`: read it with `trajectory.sample(..., offset=(cell-1)/2)`.
    """
    return _window_sums(_window_sums(hist, cell, -1), cell, -2)


def _window_sums(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Sums of `size` consecutive entries along `dim` (length n -> n - size + 1).

    Doubling: sums of 1, 2, 4, ... entries, each from two of the previous, and one
    piece per set bit of `size` (3 additions for a window of 8).
    """
    length = x.shape[dim] - size + 1
    total, offset, part, width = None, 0, x, 1
    while True:
        if size & width:  # add the `width` entries starting `offset` into the window
            piece = part.narrow(dim, offset, length)
            total = piece.clone() if total is None else total.add_(piece)
            offset += width
        if 2 * width > size:
            assert total is not None  # size >= 1 has a set bit at or below width
            return total
        shorter = part.shape[dim] - width
        part = part.narrow(dim, 0, shorter) + part.narrow(dim, width, shorter)
        width *= 2


CHUNK_PIXELS = 1 << 16  # `cell_histograms` takes about this many pixels at a time on CPU (so they stay in cache)


def cell_histograms(
    frames: torch.Tensor, cell: int = 8, bins: int = 9, channels: str = "max", stride: int = 1
) -> torch.Tensor:
    """HOG of the cell around every `stride`-th position of frames `(M, H, W, 3)`, uint8 or float on 0-255.

    Returns channels-last `(M, (H - cell)/stride + 1, (W - cell)/stride + 1, C*bins)`: entry
    `[i, j]` is the cell whose top-left pixel is `(stride*j, stride*i)`, centred at
    `(stride*j + (cell-1)/2, stride*i + (cell-1)/2)` px; read it with `trajectory.sample_maps`.

    `stride=1` is `cell_map(pixel_hog(frames / 255))`, channels last. A larger stride (it
    must divide `cell`) adds each pixel's votes into its stride x stride block and sums
    blocks into cells: the kept cells are exact and the maps stride^2 times smaller, and
    a read between kept positions blends cells `stride` px apart (an approximation).
    Gradients and votes are made per pixel either way, in chunks of `CHUNK_PIXELS` on CPU
    (256 times more on a GPU). Channel ties are decided on exact integer Sobel energies.
    """
    return torch.cat([maps for _, maps in cell_histogram_chunks(frames, cell, bins, channels, stride)])


def cell_histogram_chunks(
    frames: torch.Tensor,
    cell: int = 8,
    bins: int = 9,
    channels: str = "max",
    stride: int = 1,
    index: torch.Tensor | None = None,
):
    """`cell_histograms` of frames `index` (default: all) of `(M, H, W, 3)`, a chunk at a time.

    Yields `(first, maps)`: the maps of frames `index[first:first + len(maps)]`, while they
    are still in cache (the MME target reads each chunk at its points right away).
    """
    m, height, width, _ = frames.shape
    if cell % stride or height % stride or width % stride:
        raise ValueError(f"HOG stride {stride} must divide the cell ({cell}) and the frame size ({height}x{width})")
    if channels not in ("max", "each"):
        raise ValueError(f"channels must be 'max' or 'each', got {channels!r}")
    index = torch.arange(m, device=frames.device) if index is None else index
    pixels = CHUNK_PIXELS if frames.device.type == "cpu" else CHUNK_PIXELS << 8  # a GPU wants few, large kernels
    chunk = min(len(index), max(1, pixels // (height * width)))
    colours = 3 if channels == "each" else 1
    slot = _slot_index(chunk, colours, height, width, stride, bins + 2, frames.device)
    for first in range(0, len(index), chunk):
        images = frames.index_select(0, index[first : first + chunk])
        yield first, _cell_histograms(images, slot, cell, bins, channels, stride)


def _slot_index(images, colours, height, width, stride, slots, device):
    """`(C, n, H, W)` long: where a pixel's vote for slot 0 goes in the flat `(n, H/stride, W/stride, C, slots)`
    votes."""
    n, rows, columns, c = (torch.arange(k, device=device) for k in (images, height, width, colours))
    block = (n[:, None, None] * (height // stride) + rows[:, None] // stride) * (width // stride) + columns // stride
    return (block * colours + c[:, None, None, None]) * slots


def _replicate_padded(frames: torch.Tensor) -> torch.Tensor:
    """Frames `(n, H, W, 3)` -> float `(3, n, H + 2, W + 2)`, border pixels replicated: one copy, not convert + pad."""
    n, height, width, _ = frames.shape
    padded = torch.empty(3, n, height + 2, width + 2, device=frames.device)
    padded[:, :, 1:-1, 1:-1] = frames.permute(3, 0, 1, 2)
    padded[:, :, 0, 1:-1] = padded[:, :, 1, 1:-1]
    padded[:, :, -1, 1:-1] = padded[:, :, -2, 1:-1]
    padded[..., 0] = padded[..., 1]
    padded[..., -1] = padded[..., -2]
    return padded


def _cell_histograms(frames, slot, cell, bins, channels, stride):
    """`cell_histograms` of one chunk; `slot` from `_slot_index` for at least this many frames."""
    n, height, width, _ = frames.shape
    dx, dy = _sobel_of_padded(_replicate_padded(frames))  # (3, n, H, W), 8 * 255 times `gradients`; rescaled at the end
    if channels == "max":
        dx, dy, energy = _strongest_channel(dx, dy, dim=0)  # (1, n, H, W)
    else:
        energy = torch.addcmul(dx * dx, dy, dy)
    magnitude = energy.sqrt_()
    # Slot k holds bin (k - 1) mod bins: a vote's two slots are then k and k + 1, with no wrap per pixel.
    angle = torch.atan2(dy, dx)
    angle += math.pi * (angle < 0)  # unsigned orientation, [0, pi]
    position = angle.mul_(bins / math.pi).add_(0.5)
    low = torch.floor(position)
    upper = position.sub_(low).mul_(magnitude)
    index = (slot[:, :n] + low.long()).view(-1)
    votes = torch.zeros(n * (height // stride) * (width // stride) * dx.shape[0] * (bins + 2), device=frames.device)
    votes.scatter_add_(0, index, magnitude.sub_(upper).view(-1))
    votes[1:].scatter_add_(0, index, upper.view(-1))
    votes = votes.view(n, height // stride, width // stride, dx.shape[0], bins + 2)
    blocks = votes[..., 1 : bins + 1].clone()
    blocks[..., 0] += votes[..., bins + 1]
    blocks[..., bins - 1] += votes[..., 0]
    blocks = blocks.flatten(3)  # (n, H/stride, W/stride, C*bins)
    return _window_sums(_window_sums(blocks, cell // stride, 2), cell // stride, 1).mul_(1 / (8 * 255))


def hog(images: torch.Tensor, cell: int = 8, bins: int = 9, channels: str = "max") -> torch.Tensor:
    """HOG of `(M, 3, H, W)` images in [0, 1] -> `(M, C*bins, H/cell, W/cell)`."""
    return cell_grid(pixel_hog(images, bins, channels), cell)


def release_hog(images: torch.Tensor, cell: int = 8, bins: int = 9, scale=None) -> torch.Tensor:
    """The official MME release's HOG target: `(M, C, H, W)` images -> `(M, C*bins, H/cell, W/cell)`,
    one histogram per channel, channel-major.

    The release feeds ImageNet-normalized frames, `(u/255 - mean_c) / std_c`. Pass the frames
    on the 0-255 scale with `scale[c] = 1 / (255 * std_c)`: the mean drops out of gradients,
    and integer-valued frames give exact gradients, so the rule below is exact. As the
    release computes it: per-pixel magnitude of the integer-weight Sobel sums (8x
    `gradients`), orientation `atan2(-dy, -dx)` taken into [0, 180) deg with bin i centred at
    i * 180/bins deg, the magnitude split between the bins below (floor) and above (ceil) as
    `ceil - p` and `p - floor`, so a pixel whose orientation falls exactly on a bin centre
    (every purely horizontal gradient, dy = 0) votes nothing; the cell's votes are averaged
    (not summed) and not normalized.
    """
    dx, dy = _sobel(images)
    if scale is not None:
        scale = torch.as_tensor(scale, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        dx, dy = dx * scale, dy * scale
    magnitude = torch.hypot(dx, dy)
    position = torch.atan2(-dy, -dx) * (bins / math.pi)
    position = torch.where(position < 0, position + bins, position)
    low, high = torch.floor(position), torch.ceil(position)
    hist = torch.zeros(images.shape[:2] + (bins,) + images.shape[2:], dtype=images.dtype, device=images.device)
    hist.scatter_add_(2, torch.remainder(high, bins).long()[:, :, None], ((position - low) * magnitude)[:, :, None])
    hist.scatter_add_(2, torch.remainder(low, bins).long()[:, :, None], ((high - position) * magnitude)[:, :, None])
    return F.avg_pool2d(hist.flatten(1, 2), cell)
