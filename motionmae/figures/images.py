"""Image building blocks: captions, grids, PNG writing. Images are RGB uint8 (H, W, 3)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from motionmae.common.files import write_atomic


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
            out[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = image
    return out


def save_png(path, image: np.ndarray) -> Path:
    """Write an RGB image as PNG (or the format the suffix names: .jpg, ...), atomically (parent folders created)."""
    path = Path(path)
    try:
        ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise OSError(f"{path}: could not write the image (unsupported extension?)")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data.tobytes())
    return path
