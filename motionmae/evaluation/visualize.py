"""Figures drawn with OpenCV and numpy: images are RGB uint8 (H, W, 3).

Small building blocks (token overlays, heat maps, captions, grids, PNG
writing), the figures made of them, and `visualize_checkpoint`, which runs a
pretrained model on one clip and draws what it predicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from motionmae.common.lists import Item, video_key
from motionmae.config import config_from_dict
from motionmae.data.datasets import PretrainDataset
from motionmae.io.video import probe
from motionmae.models import checkpoints
from motionmae.models.vit import token_grid
from motionmae.motion import trajectory as TR
from motionmae.motion.masking import MaskGenerator
from motionmae.motion.targets import build_target, input_frames, to_tokens
from motionmae.train.pretrain import build_model, normalize_video

MASK_COLOR = (40, 90, 230)  # RGB of masked tokens
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]  # RGB of chart series


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


# ---------------------------------------------------------------- what a pretrained model predicts (MME's Figure 4)


def panel_scale(side: int) -> int:
    """Integer upscaling of a `side`-px frame in the prediction figures, so a panel is at least 300 px."""
    return max(1, -(-300 // side))


def time_colors(steps: int) -> list[tuple[int, int, int]]:
    """`steps` RGB colours from dark to light (plasma colormap), one per trajectory step in time order."""
    ramp = np.linspace(40, 255, steps).astype(np.uint8)[:, None]
    return [tuple(int(c) for c in rgb) for rgb in cv2.applyColorMap(ramp, cv2.COLORMAP_PLASMA)[:, 0, ::-1]]


def draw_trajectories(image: np.ndarray, positions: np.ndarray, scale: int) -> np.ndarray:
    """Polylines of trajectories `(P, L+1, 2)` `(x, y)` px (frame pixels) on a copy of an image `scale` times larger.

    Segment l (from p_l to p_l+1) takes colour l of `time_colors(L)`: dark early, light late.
    """
    out = image.copy()
    colors = time_colors(positions.shape[1] - 1)
    points = np.round(((positions + 0.5) * scale - 0.5) * 16).astype(np.int64)  # enlarged px, 4 fractional bits
    thickness = 2 if scale >= 3 else 1
    for trajectory in points:
        for l, color in enumerate(colors):
            cv2.line(out, tuple(map(int, trajectory[l])), tuple(map(int, trajectory[l + 1])), color, thickness,
                     cv2.LINE_AA, shift=4)
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


def trajectory_figure(frames: np.ndarray, mask: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                      valid: np.ndarray, patch: int, title: str, errors=None, rows: int = 4) -> np.ndarray:
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
        grid.append([
            caption(_enlarge(token_overlay(frame, mask[j], (patch, patch)), scale), f"(a) slice {j}: masked input"),
            caption(draw_trajectories(background, truth[j][shown], scale), "(b) ground truth"),
            caption(draw_trajectories(background, predicted[j][shown], scale), f"(c) prediction{error}"),
            caption(_enlarge(frame, scale), "(d) original frame"),
        ])
    return caption(grid_image(grid), title, height=28)


def reconstruction_figure(frames: np.ndarray, mask: np.ndarray, reconstruction: np.ndarray, patch: int, title: str,
                          errors=None, rows: int = 4) -> np.ndarray:
    """Pixel targets (VideoMAE): per temporal token slice, (a) masked frame, (b) reconstruction, (c) frame.

    frames, reconstruction: uint8 (T', S, S, 3), the first frame of each slice (the
    reconstruction keeps visible tokens and fills masked ones with the prediction);
    mask: bool (T', Hp, Wp); errors: optional per-slice losses shown over column (b).
    """
    scale = panel_scale(frames.shape[1])
    grid = []
    for j in _rows(len(frames), rows):
        error = "" if errors is None else f", loss {errors[j]:.2f}"
        grid.append([
            caption(_enlarge(token_overlay(frames[j], mask[j], (patch, patch)), scale), f"(a) slice {j}: masked input"),
            caption(outline(_enlarge(reconstruction[j], scale), mask[j], (patch * scale,) * 2, (150, 150, 150), 1),
                    f"(b) reconstruction{error}"),
            caption(_enlarge(frames[j], scale), "(c) original frame"),
        ])
    return caption(grid_image(grid), title, height=28)


class VisualizeError(ValueError):
    """A checkpoint, video or option `visualize_checkpoint` cannot draw; the message is one line."""


@dataclass
class Prediction:
    """What a pretraining checkpoint predicts on one clip, and its figure.

    Positions are `(x, y)` px in the centre crop (`box` maps it to the decoded video).
    """

    image: np.ndarray  # the figure, RGB uint8
    target: str  # "traj" or "pixel"
    start: int  # the clip's first raw frame in the video
    box: object  # data.CropBox of the centre crop, in decoded pixels (decode size: data.short_side)
    frames: np.ndarray  # uint8 (T_raw, S, S, 3): the clip's raw span, cropped
    mask: np.ndarray  # bool (T', Hp, Wp)
    truth: np.ndarray | None = None  # traj: float32 (T', Hp*Wp, K, L+1, 2) tracked positions
    predicted: np.ndarray | None = None  # traj: the same, from the predicted displacements
    valid: np.ndarray | None = None  # traj: bool (T', Hp*Wp, K) the trajectory stays in the frame
    reconstruction: np.ndarray | None = None  # pixel: uint8 (T, S, S, 3) the input frames, masked tokens predicted


def _load(checkpoint):
    """Config, target builder and model (eval mode, CPU) of one of our pretraining checkpoints."""
    state = checkpoints.load(checkpoint)
    if not isinstance(state, dict) or "config" not in state or "target" not in state:
        raise VisualizeError(f"{checkpoint}: not a motionmae pretraining checkpoint (no config and target "
                             f"recorded); visualize needs the decoder of `motionmae pretrain`")
    config = config_from_dict(state["config"])
    m = config.model
    target = build_target(config.target.name, tubelet=m.tubelet, patch=m.patch, **config.target.options)
    if target.name not in ("traj", "pixel"):
        raise VisualizeError(f"{checkpoint}: visualize draws traj and pixel targets; this one predicts {target.name}")
    model = build_model(config, target.dim, target.parts)
    checkpoints.load_state_dict_strict(model, state["model"], str(checkpoint))
    return config, target, model.eval(), state.get("step")


def _clip(config, target, masks: MaskGenerator, video, start: int | None, rng: np.random.Generator):
    """A pretraining sample of `video` without augmentation: raw span, flow, mask, start and crop.

    Made by the pretraining dataset in evaluation mode (centre crop, no flip), with
    flow from the motion cache when the video has an entry there, else computed.
    frames uint8 (T_raw, S, S, 3); flow float32 (T_raw - 1, S, S, 2) or None; mask bool (N,).
    """
    d = config.data
    span = target.raw_span(d.frames, d.stride)
    count = probe(video).num_frames
    if count < span:
        raise VisualizeError(f"{video}: has {count} frames; a clip of {d.frames} frames at stride {d.stride} "
                             f"with its {target.name} target needs {span}")
    start = (count - span) // 2 if start is None else start
    if not 0 <= start <= count - span:
        raise VisualizeError(f"{video}: start {start} out of range; the clip needs {span} of its {count} frames, "
                             f"so start at 0 .. {count - span}")
    dataset = PretrainDataset([], dataclasses.replace(d, flow_on_the_fly=True), span, masks,
                              needs_flow=target.needs_flow or masks.needs_flow, train=False)
    root = Path(d.train) if Path(d.train).is_dir() else Path(d.train).parent
    sample, box = dataset.sample(Item(Path(video), -1, video_key(video, root)), rng, start)
    flow = sample["flow"].numpy() if target.needs_flow else None
    return sample["frames"].numpy(), flow, sample["mask"].numpy(), start, box


def _position_stats(displacement: torch.Tensor, valid: torch.Tensor, target):
    """Offset and scale with which the traj target normalized displacements `(N, K, L, 2)` px; valid (N, K)."""
    if target.traj_norm in ("none", "scale"):
        return 0.0, (target.traj_scale if target.traj_norm == "scale" else 1.0)
    dims = (1, 2, 3) if target.traj_norm == "token" else (1,)
    weight = valid[..., None, None].float().expand_as(displacement)
    count = weight.sum(dims, keepdim=True)
    mean = (displacement * weight).sum(dims, keepdim=True) / count.clamp(min=1)
    squares = ((displacement - mean) ** 2 * weight).sum(dims, keepdim=True)
    if target.traj_norm == "across_k":  # the release's PatchStd: unbiased std + 1e-6
        return mean, (squares / (count - 1).clamp(min=1)).sqrt() + 1e-6
    return mean, (squares / count.clamp(min=1) + 1e-6).sqrt()


def _trajectories(target, config, frames, flow, prediction, grid):
    """True and predicted positions `(T', Hp*Wp, K, L+1, 2)` px and validity `(T', Hp*Wp, K)`.

    The truth comes from the same builder without normalization or shape part; the
    predicted standardized displacements are mapped back to pixels with the true
    displacements' mean and std per token, then summed from the start points.
    """
    d, steps = config.data, target.traj_len
    raw = build_target("traj", **{**config.target.options, "traj_norm": "none", "shape": False},
                       tubelet=target.tubelet, patch=target.patch)
    displacement, ok = raw(frames, flow, d.frames, d.stride)  # (1, N, K*L*2) px, zero where invalid
    displacement = displacement.view(-1, target.num_points, steps, 2)
    valid = ok.view(-1, target.num_points, steps, 2)[..., 0, 0]
    mean, std = _position_stats(displacement, valid, target)
    position = target.parts["position"]
    predicted = prediction[:, position].view_as(displacement) * std + mean
    starts = TR.start_points(d.size, d.size, target.patch, target.cell).view(-1, (target.patch // target.cell) ** 2, 2)
    if target.merge:
        starts = starts.mean(dim=1, keepdim=True)  # one trajectory per token, drawn from its centre
    starts = starts.repeat(grid[0], 1, 1)[:, :, None]  # (N, K, 1, 2)
    k = starts.shape[1]

    def positions(steps_px):
        return torch.cat([starts, starts + steps_px.cumsum(dim=2)], dim=2).view(grid[0], -1, k, steps + 1, 2).numpy()

    return positions(displacement), positions(predicted), valid.view(grid[0], -1, k).numpy()


def _reconstruction(target, config, frames, prediction, mask, grid):
    """Input frames uint8 `(T, S, S, 3)` with masked tokens replaced by predicted pixels.

    A per-patch normalized prediction is mapped back with the true patch's mean and
    std per channel (VideoMAE's visualization).
    """
    d, t, p = config.data, target.tubelet, target.patch
    pixels = to_tokens(input_frames(frames, d.frames, d.stride).float() / 255, t, p)[0]  # (N, t*p*p, 3)
    predicted = prediction.view_as(pixels)
    if target.norm:
        predicted = predicted * (pixels.var(dim=1, keepdim=True).sqrt() + 1e-6) + pixels.mean(dim=1, keepdim=True)
    pixels[mask] = predicted[mask]
    video = pixels.view(*grid, t, p, p, 3).permute(0, 3, 1, 4, 2, 5, 6).reshape(d.frames, d.size, d.size, 3)
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@torch.no_grad()
def visualize_checkpoint(checkpoint, video, out=None, start: int | None = None, seed: int = 0,
                         mask_ratio: float | None = None, rows: int = 4) -> Prediction:
    """Run a pretraining checkpoint on one clip of `video`, draw what it predicts, write it to `out` (PNG).

    The clip is cut like a pretraining sample without augmentation: `data.frames` frames
    `data.stride` apart from raw frame `start` (default: the middle clip), decoded at
    `data.short_side` and centre-cropped to `data.size`; flow is read from the motion
    cache of `data.cache` or computed on the fly; the mask is the checkpoint's strategy
    (`mask_ratio` overrides its ratio) drawn with `seed`.

    Trajectory targets give `trajectory_figure`. With `traj_norm: scale` (default) the
    predicted displacements are drawn times `traj_scale` px. Standardized ones are drawn
    in pixels with the true displacements' mean and std per token (as VideoMAE's
    visualization de-normalizes pixels): the offset and scale of the drawn prediction
    come from the truth, its direction and shape from the model. With `traj_norm: token` the mean is one number for x and y, so a model that predicts
    the token mean (all zeros, e.g. untrained) draws 45-degree diagonals of the mean step;
    with `traj_norm: across_k` the token's mean motion itself comes from the truth.
    Pixel targets give `reconstruction_figure`. Each row shows the slice's (position or pixel) loss.
    """
    config, target, model, step = _load(checkpoint)
    d, m = config.data, config.model
    grid = token_grid(d.frames, d.size, m.tubelet, m.patch)
    ratio = config.mask.ratio if mask_ratio is None else mask_ratio
    try:
        masks = MaskGenerator(config.mask.kind, ratio, grid, prefer=config.mask.guidance,
                              options=dict(config.mask.options))
    except ValueError as err:
        raise VisualizeError(f"mask ratio {ratio}: {err}") from None
    rng = np.random.default_rng(seed)
    frames, flow, mask, start, box = _clip(config, target, masks, video, start, rng)

    frames_t = torch.from_numpy(frames)[None]
    flow_t = None if flow is None else torch.from_numpy(flow)[None]
    mask_t = torch.from_numpy(mask)[None]
    y, valid = target(frames_t, flow_t, d.frames, d.stride)
    prediction = y[0].clone()
    prediction[mask] = model(normalize_video(input_frames(frames_t, d.frames, d.stride)), mask_t)[0].float()

    name = "position" if target.name == "traj" else "pixel"
    part = target.parts[name]
    weight = (valid[0] & mask_t[0, :, None])[:, part].float().view(grid[0], -1)
    error = ((prediction - y[0])[:, part] ** 2).view(grid[0], -1)
    errors = ((error * weight).sum(1) / weight.sum(1).clamp(min=1)).numpy()
    mask = mask.reshape(grid)
    shown = frames[0:(d.frames - 1) * d.stride + 1:m.tubelet * d.stride]  # raw frame r_j of each slice
    title = (f"{Path(video).name} frames {start}..{start + len(frames) - 1}, {target.name} target, "
             f"{config.mask.kind} mask {masks.ratio:g} ({int(mask.sum())}/{mask.size}), step {step}")
    if target.name == "traj":
        truth, predicted, inside = _trajectories(target, config, frames_t, flow_t, prediction, grid)
        image = trajectory_figure(shown, mask, truth, predicted, inside, m.patch, title, errors, rows)
        result = Prediction(image, target.name, start, box, frames, mask, truth, predicted, inside)
    else:
        reconstruction = _reconstruction(target, config, frames_t, prediction, mask_t[0], grid)
        image = reconstruction_figure(shown, mask, reconstruction[::m.tubelet], m.patch, title, errors, rows)
        result = Prediction(image, target.name, start, box, frames, mask, reconstruction=reconstruction)
    if out is not None:
        save_png(out, result.image)
    return result
