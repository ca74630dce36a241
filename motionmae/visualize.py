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


def confusion_figure(confusion: np.ndarray, names: list[str], title: str) -> np.ndarray:
    """Confusion matrix (C, C) of counts, rows = true class, columns = predicted, as an RGB image.

    Cells are coloured by the row-normalized rate (viridis, 0..1) with the count written in
    when they are large enough; row i is labelled `i name`, column i by its index.
    """
    C = len(confusion)
    cell = int(np.clip(720 // max(C, 1), 3, 36))
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    gray = np.kron((rates * 255).astype(np.uint8), np.ones((cell, cell), np.uint8))
    grid = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    labels = [f"{i} {name}" for i, name in enumerate(names)] if cell >= 10 else []
    left = 8 + max((cv2.getTextSize(t, font, scale, 1)[0][0] for t in labels), default=0)
    top = 22 if cell >= 10 else 4
    image = np.zeros((top + C * cell + 4, left + C * cell + 4, 3), np.uint8)
    image[top:top + C * cell, left:left + C * cell] = grid
    for i, text in enumerate(labels):
        cv2.putText(image, text, (4, top + i * cell + cell // 2 + 4), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
        width = cv2.getTextSize(str(i), font, scale, 1)[0][0]
        cv2.putText(image, str(i), (left + i * cell + (cell - width) // 2, top - 7), font, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    if cell >= 20:
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                text = str(int(count))
                width = cv2.getTextSize(text, font, scale, 1)[0][0]
                color = (0, 0, 0) if rates[i, j] > 0.6 else (255, 255, 255)
                cv2.putText(image, text, (left + j * cell + (cell - width) // 2, top + i * cell + cell // 2 + 4),
                            font, scale, color, 1, cv2.LINE_AA)
    return caption(image, title + "   rows: true, columns: predicted", height=24)


def line_chart(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, size=(720, 400)) -> np.ndarray:
    """Curves {name: (x, y)} on shared axes, each in its own colour with a legend: RGB (H, W, 3)."""
    width, height = size
    left, right, top, bottom = 60, 20, 36, 36
    image = np.full((height, width, 3), 255, np.uint8)
    xs = np.concatenate([x for x, _ in series.values()])
    ys = np.concatenate([y for _, y in series.values()])
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = float(min(ys.min(), 0.0)), float(ys.max()) or 1.0

    def to_pixels(x, y):
        px = left + (x - x0) / max(x1 - x0, 1e-9) * (width - left - right)
        py = height - bottom - (y - y0) / max(y1 - y0, 1e-9) * (height - top - bottom)
        return np.stack([px, py], axis=-1).astype(np.int32)

    cv2.rectangle(image, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for value, label in ((y0, f"{y0:.2f}"), (y1, f"{y1:.2f}")):
        _, py = to_pixels(np.array(x0), np.array(value))
        cv2.putText(image, label, (4, int(py) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{x0:g}", (left, height - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{x1:g}", (width - right - 40, height - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(image, title, (left, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for i, (name, (x, y)) in enumerate(series.items()):
        color = palette[i % len(palette)]
        cv2.polylines(image, [to_pixels(x, y)], False, color, 2, cv2.LINE_AA)
        cv2.putText(image, name, (width - right - 150, top + 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                    cv2.LINE_AA)
    return image


def metrics_figure(metrics_path) -> np.ndarray:
    """Training curves of a run's metrics.jsonl: the loss and its parts against the step."""
    import json

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    steps = np.array([r["step"] for r in records], np.float64)
    skip = {"step", "epoch", "lr", "clips_per_s"}
    names = [k for k in records[0] if k not in skip]
    series = {name: (steps, np.array([r[name] for r in records], np.float64)) for name in names}
    return line_chart(series, f"pretraining loss ({Path(metrics_path).parent.name})")
