"""Charts drawn with OpenCV and numpy: training curves, grouped bars, confusion matrices (RGB uint8 (H, W, 3))."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from motionmae.figures.images import caption


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]  # RGB of chart series


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
    for i, (name, (x, y)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        cv2.polylines(image, [to_pixels(x, y)], False, color, 2, cv2.LINE_AA)
        cv2.putText(image, name, (width - right - 150, top + 18 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                    cv2.LINE_AA)
    return image


def bar_chart(groups: dict[str, dict[str, tuple[float, float | None]]], title: str,
              line: tuple[str, float] | None = None, height: int = 460) -> np.ndarray:
    """Grouped bars {group: {series: (value, error or None)}} from 0, with +-error whiskers, a legend,
    group names written upwards under their bars and an optional labelled horizontal line
    (name, value): RGB (H, W, 3)."""
    series = list(dict.fromkeys(name for bars in groups.values() for name in bars))
    bar, gap, left, right, top, bottom = 14, 14, 50, 20, 60, 150
    width = max(480, left + len(groups) * (len(series) * bar + gap) + right)
    tops = [value + (error or 0) for bars in groups.values() for value, error in bars.values()]
    y1 = 1.1 * max([*tops, line[1] if line else 0.0, 1e-9])
    image = np.full((height, width, 3), 255, np.uint8)
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)

    def to_y(value: float) -> int:
        return int(round(height - bottom - value / y1 * (height - top - bottom)))

    tick = 10.0 ** np.floor(np.log10(y1 / 5))
    tick *= next(m for m in (1, 2, 5, 10) if y1 / (tick * m) <= 5)  # 1, 2 or 5 x 10^k: at most 5 steps
    for value in np.arange(0, y1, tick):
        cv2.line(image, (left, to_y(value)), (width - right, to_y(value)), (225, 225, 225), 1)
        cv2.putText(image, f"{value:.3g}", (4, to_y(value) + 4), font, 0.4, black, 1, cv2.LINE_AA)
    for g, (group, bars) in enumerate(groups.items()):
        x0 = left + gap // 2 + g * (len(series) * bar + gap)
        for name, (value, error) in bars.items():
            x = x0 + series.index(name) * bar
            color = PALETTE[series.index(name) % len(PALETTE)]
            cv2.rectangle(image, (x, to_y(value)), (x + bar - 2, to_y(0)), color, -1)
            if error:
                centre = x + bar // 2 - 1
                cv2.line(image, (centre, to_y(value - error)), (centre, to_y(value + error)), black, 1)
                for end in (value - error, value + error):
                    cv2.line(image, (centre - 3, to_y(end)), (centre + 3, to_y(end)), black, 1)
        label = np.full((16, bottom - 8, 3), 255, np.uint8)
        text_width = cv2.getTextSize(group, font, 0.4, 1)[0][0]
        cv2.putText(label, group, (label.shape[1] - text_width - 2, 12), font, 0.4, black, 1, cv2.LINE_AA)
        label = np.rot90(label)  # reads upwards, ending under the bars
        x = x0 + len(series) * bar // 2 - 8
        image[height - bottom + 4:height - 4, x:x + 16] = label
    if line:
        cv2.line(image, (left, to_y(line[1])), (width - right, to_y(line[1])), (120, 120, 120), 1, cv2.LINE_AA)
        cv2.putText(image, line[0], (width - right - 120, to_y(line[1]) - 4), font, 0.4, (90, 90, 90), 1,
                    cv2.LINE_AA)
    cv2.line(image, (left, to_y(0)), (width - right, to_y(0)), black, 1)
    cv2.putText(image, title, (left, 22), font, 0.55, black, 1, cv2.LINE_AA)
    for i, name in enumerate(series):
        x = left + 160 * i
        cv2.rectangle(image, (x, 34), (x + 12, 46), PALETTE[i % len(PALETTE)], -1)
        cv2.putText(image, name, (x + 18, 45), font, 0.45, black, 1, cv2.LINE_AA)
    return image


def metrics_figure(metrics_path) -> np.ndarray:
    """Training curves of a run's metrics.jsonl: the loss and its parts against the step."""
    import json

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    records = [r for r in records if "loss" in r]  # not the records of videos read or validation
    steps = np.array([r["step"] for r in records], np.float64)
    skip = {"step", "epoch", "lr", "clips_per_s"}
    names = [k for k, v in records[0].items() if k not in skip and isinstance(v, (int, float))]
    series = {name: (steps, np.array([r[name] for r in records], np.float64)) for name in names}
    return line_chart(series, f"pretraining loss ({Path(metrics_path).parent.name})")
