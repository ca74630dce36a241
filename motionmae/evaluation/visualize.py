"""What a pretrained model predicts on one clip, drawn: MME's Figure 4, or a pixel reconstruction.

`visualize_checkpoint` runs a pretraining checkpoint on one clip of a video and draws its
prediction with `figures.overlays` (images are RGB uint8 (H, W, 3)).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from motionmae.common.lists import Item, video_key
from motionmae.config import config_from_dict
from motionmae.data.datasets import PretrainDataset
from motionmae.errors import UsageError
from motionmae.figures.images import save_png
from motionmae.figures.overlays import reconstruction_figure, trajectory_figure
from motionmae.io.video import probe
from motionmae.models import checkpoints
from motionmae.models.vit import normalize_video, token_grid
from motionmae.motion import trajectory as TR
from motionmae.motion.masking import MaskGenerator
from motionmae.motion.targets import build_target, input_frames, to_tokens
from motionmae.train.pretrain import build_model


class VisualizeError(UsageError):
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
        raise VisualizeError(
            f"{checkpoint}: not a motionmae pretraining checkpoint (no config and target "
            f"recorded); visualize needs the decoder of `motionmae pretrain`"
        )
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
        raise VisualizeError(
            f"{video}: has {count} frames; a clip of {d.frames} frames at stride {d.stride} "
            f"with its {target.name} target needs {span}"
        )
    start = (count - span) // 2 if start is None else start
    if not 0 <= start <= count - span:
        raise VisualizeError(
            f"{video}: start {start} out of range; the clip needs {span} of its {count} frames, "
            f"so start at 0 .. {count - span}"
        )
    dataset = PretrainDataset(
        [],
        dataclasses.replace(d, flow_on_the_fly=True),
        span,
        masks,
        needs_flow=target.needs_flow or masks.needs_flow,
        train=False,
    )
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
    raw = build_target(
        "traj",
        **{**config.target.options, "traj_norm": "none", "shape": False},
        tubelet=target.tubelet,
        patch=target.patch,
    )
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
def visualize_checkpoint(
    checkpoint, video, out=None, start: int | None = None, seed: int = 0, mask_ratio: float | None = None, rows: int = 4
) -> Prediction:
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
    come from the truth, its direction and shape from the model. With `traj_norm: token` the mean is one number
    for x and y, so a model that predicts the token mean (all zeros, e.g. untrained) draws 45-degree diagonals
    of the mean step; with `traj_norm: across_k` the token's mean motion itself comes from the truth.
    Pixel targets give `reconstruction_figure`. Each row shows the slice's (position or pixel) loss.
    """
    config, target, model, step = _load(checkpoint)
    d, m = config.data, config.model
    grid = token_grid(d.frames, d.size, m.tubelet, m.patch)
    ratio = config.mask.ratio if mask_ratio is None else mask_ratio
    try:
        masks = MaskGenerator(
            config.mask.kind, ratio, grid, prefer=config.mask.guidance, options=dict(config.mask.options)
        )
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
    shown = frames[0 : (d.frames - 1) * d.stride + 1 : m.tubelet * d.stride]  # raw frame r_j of each slice
    title = (
        f"{Path(video).name} frames {start}..{start + len(frames) - 1}, {target.name} target, "
        f"{config.mask.kind} mask {masks.ratio:g} ({int(mask.sum())}/{mask.size}), step {step}"
    )
    if target.name == "traj":
        truth, predicted, inside = _trajectories(target, config, frames_t, flow_t, prediction, grid)
        image = trajectory_figure(shown, mask, truth, predicted, inside, m.patch, title, errors, rows)
        result = Prediction(image, target.name, start, box, frames, mask, truth, predicted, inside)
    else:
        reconstruction = _reconstruction(target, config, frames_t, prediction, mask_t[0], grid)
        image = reconstruction_figure(shown, mask, reconstruction[:: m.tubelet], m.patch, title, errors, rows)
        result = Prediction(image, target.name, start, box, frames, mask, reconstruction=reconstruction)
    if out is not None:
        save_png(out, result.image)
    return result
