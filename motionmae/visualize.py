"""Figures drawn with OpenCV and numpy: images are RGB uint8 (H, W, 3).

Small building blocks (token overlays, heat maps, captions, grids, PNG
writing) and the figures made of them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MASK_COLOR = (40, 90, 230)  # RGB of masked tokens


def upsample_tokens(tokens: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """Token map (Hp, Wp) -> pixel map (Hp*ph, Wp*pw), each token a constant block."""
    return np.kron(tokens, np.ones(patch, dtype=tokens.dtype))


def token_overlay(frame: np.ndarray, mask: np.ndarray, patch: tuple[int, int],
                  color=MASK_COLOR, alpha: float = 0.65) -> np.ndarray:
    """Blend `color` over the pixels of masked tokens. mask: bool (Hp, Wp)."""
    pixels = upsample_tokens(mask.astype(np.uint8), patch).astype(bool)
    out = frame.astype(np.float32)
    out[pixels] = (1 - alpha) * out[pixels] + alpha * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def outline(image: np.ndarray, mask: np.ndarray, patch: tuple[int, int],
            color=(255, 255, 255), thickness: int = 2) -> np.ndarray:
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


def caption(image: np.ndarray, text: str, height: int = 22) -> np.ndarray:
    """Image with a black strip of white text above it."""
    strip = np.zeros((height, image.shape[1], 3), np.uint8)
    cv2.putText(strip, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, image])


def grid_image(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Tile equally sized images row by row with `gap` px of black between them."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    out = np.zeros((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = image
    return out


def save_png(path, image: np.ndarray) -> Path:
    """Write an RGB image as PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the image (unsupported extension or unwritable folder?)")
    return path


def mask_figure(frames: np.ndarray, mask: np.ndarray, magnitude: np.ndarray, title: str,
                patch: tuple[int, int] = (16, 16)) -> np.ndarray:
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
        rows.append([
            caption(token_overlay(frame, slice_mask, patch), f"slice {j}: {int(slice_mask.sum())} masked"),
            caption(outline(heatmap(slice_magnitude, patch, vmax), slice_mask, patch),
                    f"motion, max {slice_magnitude.max():.2f}"),
        ])
    return caption(grid_image(rows), title, height=28)
