"""Charts as matplotlib Figures: training curves, grouped bars, confusion matrices.

Figures are made on the Agg canvas without pyplot, so they draw headless and in worker
processes; restyle them (or set rcParams before making them), then write them with
`save_figure`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from motionmae.common.files import write_atomic

LABELLED_CLASSES = 40  # confusion matrices up to this many classes name them on the axes
COUNTED_CLASSES = 20  # ... and up to this many write the counts in the cells


def new_figure(size: tuple[float, float]) -> Figure:
    """An empty matplotlib Figure of `size` inches on the Agg canvas (no pyplot, no display needed),
    laid out with constrained layout. rcParams and style sheets in effect when it is made apply to it."""
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(path, figure: Figure, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG (or the format the suffix names: .svg, .pdf), atomically
    (parent folders created)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix[1:] or "png", dpi=dpi)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    return path


def confusion_figure(confusion: np.ndarray, names: list[str], title: str) -> Figure:
    """Confusion matrix (C, C) of counts, rows = true class, columns = predicted, as a figure.

    Cells are coloured by the row-normalized rate (viridis, 0..1, with a colour bar); up to
    LABELLED_CLASSES classes are named on both axes, and up to COUNTED_CLASSES have their
    non-zero counts written in the cells.
    """
    C = len(confusion)
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    side = float(np.clip(2 + 0.4 * C, 5, 12))
    figure = new_figure((side + 1.5, side))
    ax = figure.add_subplot()
    image = ax.imshow(rates, cmap="viridis", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    if C <= LABELLED_CLASSES:
        ax.set_xticks(range(C), names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(C), names)
    if C <= COUNTED_CLASSES:
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                ax.text(
                    j,
                    i,
                    str(int(count)),
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="black" if rates[i, j] > 0.6 else "white",
                )
    return figure


def bar_chart(
    groups: dict[str, dict[str, tuple[float, float | None]]],
    title: str,
    line: tuple[str, float] | None = None,
    ylabel: str | None = None,
) -> Figure:
    """Grouped bars {group: {series: (value, error or None)}} from 0 with +-error bars, as a figure.

    One colour per series (the axes' colour cycle) with a legend above the plot; group names
    under their bars; `line` (name, value): a dashed horizontal line, its name written in the
    right margin at its height, where no bar can be.
    """
    series = list(dict.fromkeys(name for bars in groups.values() for name in bars))
    width = 0.8 / len(series)
    figure = new_figure((max(6.4, 1.5 + 0.2 * len(groups) * (len(series) + 1)), 5))
    ax = figure.add_subplot()
    for k, name in enumerate(series):
        x, values, errors = [], [], []
        for g, bars in enumerate(groups.values()):
            if name in bars:
                x.append(g + (k - (len(series) - 1) / 2) * width)
                values.append(bars[name][0])
                errors.append(bars[name][1])
        ax.bar(x, values, width, label=name)
        shown = [i for i, error in enumerate(errors) if error]
        if shown:
            ax.errorbar(
                [x[i] for i in shown],
                [values[i] for i in shown],
                [float(errors[i] or 0) for i in shown],
                fmt="none",
                ecolor="0.15",
                elinewidth=1,
                capsize=3,
            )
    if line:
        ax.axhline(line[1], color="0.4", linestyle="--", linewidth=1)
        ax.annotate(
            line[0],
            xy=(1, line[1]),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            color="0.3",
            annotation_clip=False,
        )
    ax.set_xticks(range(len(groups)), list(groups), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_ylim(bottom=0)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=len(series), frameon=False)
    figure.suptitle(title)
    return figure


NOT_LOSSES = {"step", "epoch", "lr", "clips_per_s", "data_wait_s", "step_s"}  # numeric keys of a metrics record


def metrics_figure(metrics_path) -> Figure:
    """Training curves of a run's metrics.jsonl against the step: the loss and its parts (top)
    and the learning rate (bottom). Records without a loss (videos read, validation) are left out."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    records = [r for r in records if "loss" in r]
    if not records:
        raise ValueError(f"{metrics_path}: no training records (with a loss) to draw")
    steps = [r["step"] for r in records]
    names = [k for k, v in records[0].items() if k not in NOT_LOSSES and isinstance(v, (int, float))]
    figure = new_figure((7.2, 5.4))
    losses, lr = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for name in names:
        losses.plot(steps, [r[name] for r in records], label=name, linewidth=2 if name == "loss" else 1)
    losses.set(ylabel="loss", title=f"training curves ({Path(metrics_path).parent.name})")
    losses.legend()
    lr.plot(steps, [r["lr"] for r in records], color="0.3")
    lr.set(xlabel="step", ylabel="learning rate")
    return figure
