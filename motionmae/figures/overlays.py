"""Drawings over video frames: token masks, motion heat maps, trajectories, reconstructions.

Images are RGB uint8 (H, W, 3). `mask_figure` is MGM's Figure 5; `trajectory_figure` MME's
Figure 4 (drawn by `evaluation.visualize` from what a checkpoint predicts).
"""

from __future__ import annotations

import cv2
import numpy as np

from motionmae.figures.images import caption, grid_image

MASK_COLOR = (40, 90, 230)  # RGB of masked tokens


def upsample_tokens(tokens: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """Token map (Hp, Wp) -> pixel map (Hp*ph, Wp*pw), each token a constant block."""
    return np.kron(tokens, np.ones(patch, dtype=tokens.dtype))


def token_overlay(
    frame: np.ndarray, mask: np.ndarray, patch: tuple[int, int], color=MASK_COLOR, alpha: float = 0.65
) -> np.ndarray:
    """Blend `color` over the pixels of masked tokens. mask: bool (Hp, Wp)."""
    pixels = upsample_tokens(mask.astype(np.uint8), patch).astype(bool)
    out = frame.astype(np.float32)
    out[pixels] = (1 - alpha) * out[pixels] + alpha * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def outline(
    image: np.ndarray, mask: np.ndarray, patch: tuple[int, int], color=(255, 255, 255), thickness: int = 2
) -> np.ndarray:
    """Draw the border of a token mask (Hp, Wp) on a copy of `image`."""
    pixels = upsample_tokens(mask.astype(np.uint8), patch)
    contours, _ = cv2.findContours(pixels, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(image.copy(), contours, -1, color, thickness)


def heatmap(values: np.ndarray, patch: tuple[int, int], vmax: float | None = None) -> np.ndarray:
    """Token values (Hp, Wp) >= 0 as an inferno-coloured image (Hp*ph, Wp*pw, 3), 0..vmax."""
    vmax = float(values.max()) if vmax is None else vmax
    scaled = np.clip(values / vmax, 0, 1) if vmax > 0 else np.zeros_like(values)
    gray = upsample_tokens((scaled * 255).astype(np.uint8), patch)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def mask_figure(
    frames: np.ndarray, mask: np.ndarray, magnitude: np.ndarray, title: str, patch: tuple[int, int] = (16, 16)
) -> np.ndarray:
    """Masks over frames beside the motion magnitude they followed (MGM's Figure 5).

    frames: uint8 (T, H, W, 3) with H = Hp*ph, W = Wp*pw; mask: bool (T', Hp, Wp);
    magnitude: float (T', Hp, Wp). One row per temporal slice: its first frame
    with masked tokens tinted, then the magnitude map (scaled to the clip's
    maximum) with the mask's outline.
    """
    per_slice = len(frames) // len(mask)
    vmax = float(magnitude.max())
    rows = []
    for j, (slice_mask, slice_magnitude) in enumerate(zip(mask, magnitude)):
        frame = frames[j * per_slice]
        rows.append(
            [
                caption(token_overlay(frame, slice_mask, patch), f"slice {j}: {int(slice_mask.sum())} masked"),
                caption(
                    outline(heatmap(slice_magnitude, patch, vmax), slice_mask, patch),
                    f"motion, max {slice_magnitude.max():.2f}",
                ),
            ]
        )
    return caption(grid_image(rows), title, height=28)


def panel_scale(side: int) -> int:
    """Integer upscaling of a `side`-px frame in the prediction figures, so a panel is at least 300 px."""
    return max(1, -(-300 // side))


def time_colors(steps: int) -> list[tuple[int, int, int]]:
    """`steps` RGB colours from dark to light (plasma colormap), one per trajectory step in time order."""
    ramp = np.linspace(40, 255, steps).astype(np.uint8)[:, None]
    return [(int(r), int(g), int(b)) for r, g, b in cv2.applyColorMap(ramp, cv2.COLORMAP_PLASMA)[:, 0, ::-1]]


def draw_trajectories(image: np.ndarray, positions: np.ndarray, scale: int) -> np.ndarray:
    """Polylines of trajectories `(P, L+1, 2)` `(x, y)` px (frame pixels) on a copy of an image `scale` times larger.

    Segment l (from p_l to p_l+1) takes colour l of `time_colors(L)`: dark early, light late.
    """
    out = image.copy()
    colors = time_colors(positions.shape[1] - 1)
    points = np.round(((positions + 0.5) * scale - 0.5) * 16).astype(np.int64)  # enlarged px, 4 fractional bits
    thickness = 2 if scale >= 3 else 1
    for trajectory in points:
        for step, color in enumerate(colors):
            cv2.line(
                out,
                tuple(map(int, trajectory[step])),
                tuple(map(int, trajectory[step + 1])),
                color,
                thickness,
                cv2.LINE_AA,
                shift=4,
            )
    return out


def _enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def _dimmed(frame: np.ndarray) -> np.ndarray:
    """A frame in gray at 60 % brightness, so coloured trajectories stand out on it."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return (cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB) * 0.6).astype(np.uint8)


def _rows(slices: int, rows: int) -> list[int]:
    """Up to `rows` temporal token slices spread evenly over `slices`."""
    return sorted(set(np.linspace(0, slices - 1, min(rows, slices)).round().astype(int).tolist()))


def trajectory_figure(
    frames: np.ndarray,
    mask: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    valid: np.ndarray,
    patch: int,
    title: str,
    errors=None,
    rows: int = 4,
) -> np.ndarray:
    """MME's Figure 4: per temporal token slice, (a) masked frame, (b) true and (c) predicted trajectories, (d) frame.

    frames: uint8 (T', S, S, 3), the raw frame each slice's trajectories start on;
    mask: bool (T', Hp, Wp); truth, predicted: float (T', Hp*Wp, K, L+1, 2) positions
    `(x, y)` px, tokens row-major; valid: bool (T', Hp*Wp, K). Trajectories of masked
    tokens that stay in the frame are drawn, dark to light in time, over the masked
    region's outline. errors: optional per-slice losses shown over column (c).
    Rows: up to `rows` slices spread over the clip; panels are `panel_scale(S)` times the frame.
    """
    scale = panel_scale(frames.shape[1])
    grid = []
    for j in _rows(len(frames), rows):
        frame, shown = frames[j], (mask[j].reshape(-1, 1) & valid[j])
        background = outline(_enlarge(_dimmed(frame), scale), mask[j], (patch * scale,) * 2, (150, 150, 150), 1)
        error = "" if errors is None else f", loss {errors[j]:.2f}"
        grid.append(
            [
                caption(_enlarge(token_overlay(frame, mask[j], (patch, patch)), scale), f"(a) slice {j}: masked input"),
                caption(draw_trajectories(background, truth[j][shown], scale), "(b) ground truth"),
                caption(draw_trajectories(background, predicted[j][shown], scale), f"(c) prediction{error}"),
                caption(_enlarge(frame, scale), "(d) original frame"),
            ]
        )
    return caption(grid_image(grid), title, height=28)


def reconstruction_figure(
    frames: np.ndarray, mask: np.ndarray, reconstruction: np.ndarray, patch: int, title: str, errors=None, rows: int = 4
) -> np.ndarray:
    """Pixel targets (VideoMAE): per temporal token slice, (a) masked frame, (b) reconstruction, (c) frame.

    frames, reconstruction: uint8 (T', S, S, 3), the first frame of each slice (the
    reconstruction keeps visible tokens and fills masked ones with the prediction);
    mask: bool (T', Hp, Wp); errors: optional per-slice losses shown over column (b).
    """
    scale = panel_scale(frames.shape[1])
    grid = []
    for j in _rows(len(frames), rows):
        error = "" if errors is None else f", loss {errors[j]:.2f}"
        grid.append(
            [
                caption(
                    _enlarge(token_overlay(frames[j], mask[j], (patch, patch)), scale), f"(a) slice {j}: masked input"
                ),
                caption(
                    outline(_enlarge(reconstruction[j], scale), mask[j], (patch * scale,) * 2, (150, 150, 150), 1),
                    f"(b) reconstruction{error}",
                ),
                caption(_enlarge(frames[j], scale), "(c) original frame"),
            ]
        )
    return caption(grid_image(grid), title, height=28)
