"""The embedded default data set: short videos whose class is defined only by motion.

Twelve classes in six pairs; the partner of each class is the same motion played
backwards (left / right, up / down, clockwise / counter-clockwise, grow / shrink,
move-then-stop / stop-then-move, approach / separate). Everything a single frame
shows (shapes, colours, textures, sizes, where the objects are in the middle frame,
how many there are) is drawn from one distribution for every class, so only motion
tells the classes apart.

A scene is a few (2-4) textured objects on a weakly textured background seen by a
camera, and every object performs the class motion: in `move_left` all of them move
left (each at its own speed, within 20 degrees of the heading), in `rotate_clockwise`
all spin, in `approach` all move toward their common centre, in `move_then_stop`
each moves in its own direction and all stop at the middle frame. So the class is
carried by many tokens of every clip, not by one small object among distractors.
In scene coordinates (pixels of the unmoved camera, y down) object k at frame t has
a pose `(cx, cy, angle, radius)`; angle in radians, positive = clockwise on screen.
The camera maps scene to image points with a 2x3 affine per frame; it is the
identity at the middle frame (index (T-1)//2), where every object is also at its
sampled pose, so the middle frame's appearance depends on neither camera nor class.
Objects are placed anywhere in the middle frame and may leave the frame before or
after it (no scene is redrawn to keep them in, which would make the middle frame's
layout depend on the class). Object 0 is the primary object of the ground truth.

On disk (`make_dataset`):

    OUT/meta.json                       generator version, arguments, seed
    OUT/classes.txt                     one class name per line, line i = label i
    OUT/train.csv, OUT/val.csv          lines `videos/<class>/<class>_00007.mp4 <label>`
    OUT/videos/<class>/<name>.mp4       H.264, yuv420p, B-frames (codec vectors exist)
    OUT/videos/<class>/<name>.npz       ground truth, see `render_video`

Every video is a pure function of (seed, label, index, size, frames, camera
motion), so parallel, resumed and repeated runs write identical data.
"""

from __future__ import annotations

import colorsys
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from motionmae.errors import UsageError

GENERATOR_VERSION = 2  # 2: every object performs the class motion, faster, weaker background

CLASSES = [
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_clockwise",
    "rotate_counterclockwise",
    "grow",
    "shrink",
    "move_then_stop",
    "stop_then_move",
    "approach",
    "separate",
]
# The class each class becomes when the clip is played backwards.
REVERSED = {
    a: b for i in range(0, len(CLASSES), 2) for a, b in [(CLASSES[i], CLASSES[i + 1]), (CLASSES[i + 1], CLASSES[i])]
}

SHAPES = ["circle", "triangle", "square", "pentagon", "star", "cross"]
TEXTURES = ["stripes", "checker", "blobs", "rings"]
CAMERA_MOTIONS = ["none", "pan", "zoom", "mixed"]

MIN_SIZE = 32  # below this the smallest objects (radius 0.08 * size) lose their shape
MIN_FRAMES = 8
VAL_FRACTION = 0.2  # the last round(0.2 N) videos of each class (at least one when N >= 2) are val

# Motion ranges, as fractions of the frame size per clip (so they do not depend on
# the number of frames) or as totals over the clip.
OBJECTS = (2, 4)  # objects per scene (uniform, inclusive), all performing the class motion
RADIUS = (0.12, 0.18)  # object circumradius at the middle frame
PLACE = (0.15, 0.85)  # object centres in the middle frame, uniform over this part of the frame
TRAVEL = (0.45, 0.70)  # translation of movers over the clip (half of it for move/stop)
DIRECTION_JITTER = np.deg2rad(20)  # left / right / up / down are this exact
HEADINGS = {"move_left": np.pi, "move_right": 0.0, "move_up": -np.pi / 2, "move_down": np.pi / 2}  # y down
SPIN = (np.pi, 2 * np.pi)  # total rotation of rotate_* (rad)
GROWTH = (1.8, 2.4)  # total radius factor of grow / shrink
SPREAD = (1.8, 2.4)  # total factor of the distances to the objects' common centre in approach / separate
PAN = (0.10, 0.20)  # camera translation over the clip
ZOOM = (1.2, 1.4)  # camera scale factor over the clip (in or out)
CANVAS_MARGIN = 0.25  # background canvas extends this far beyond the frame
TEXTURE = (3.0, 8.0)  # contrast of the background's fine texture (of 255)
NOISE = (1.0, 2.5)  # std of the additive pixel noise (of 255)

# x264 on top of write_video's defaults (B-frames, GOP 12, crf 18, no macroblock-tree,
# which made about 1 encode in 30 differ under load). One thread: several threads
# also change the bytes. veryfast keeps 1,200 videos well under a minute on two cores.
X264_OPTIONS = {"preset": "veryfast", "threads": "1"}


class SyntheticError(UsageError):
    """Bad arguments or output folder; the message is one line for the user."""


# ---------------------------------------------------------------- scene


@dataclass
class Scene:
    """Everything needed to render one video; arrays float32."""

    label: int
    pose: np.ndarray  # (T, N, 4) cx, cy, angle, radius in scene px / rad
    camera: np.ndarray  # (T, 3, 3) scene -> image
    shapes: list[int]  # (N,) index into SHAPES
    sprites: list[np.ndarray]  # (N,) (P, P, 4) premultiplied RGB + alpha, covering local [-1, 1]^2
    background: np.ndarray  # (S + 2m, S + 2m, 3) canvas, scene point (0, 0) at pixel (m, m)
    margin: float  # m
    noise: float  # pixel noise std
    noise_seed: int
    size: int  # S
    camera_motion: str  # none, pan or zoom (what "mixed" drew)


def _affine(a=1.0, b=0.0, c=0.0, d=1.0, tx=0.0, ty=0.0) -> np.ndarray:
    return np.array([[a, b, tx], [c, d, ty], [0, 0, 1]], np.float64)


def _camera(rng, mode: str, size: int, tau: np.ndarray) -> tuple[np.ndarray, str]:
    """(T, 3, 3) scene -> image transforms, identity at the middle frame, and the mode used."""
    if mode == "mixed":
        mode = ["none", "pan", "zoom"][rng.integers(3)]
    cams = np.repeat(np.eye(3)[None], len(tau), axis=0)
    if mode == "pan":
        heading = rng.uniform(0, 2 * np.pi)
        shift = -rng.uniform(*PAN) * size * tau[:, None] * [np.cos(heading), np.sin(heading)]
        cams[:, :2, 2] = shift
    elif mode == "zoom":
        factor = rng.uniform(*ZOOM) ** rng.choice([-1, 1])
        centre = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
        scale = factor**tau
        cams[:, 0, 0] = cams[:, 1, 1] = scale
        cams[:, :2, 2] = centre * (1 - scale[:, None])
    return cams, mode


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _class_motion(rng, name: str, pose: np.ndarray, tau: np.ndarray, size: int) -> None:
    """Give every object the class motion, in place; pose (T, N, 4) holds the middle-frame poses."""
    middle = pose[0].copy()  # (N, 4)
    if name in ("approach", "separate"):
        centre = middle[:, :2].mean(0)
        factor = rng.uniform(*SPREAD) ** (tau * (1 if name == "separate" else -1))  # (T,)
        pose[:, :, :2] = centre + (middle[:, :2] - centre) * factor[:, None, None]
        return
    for k in range(pose.shape[1]):
        travel = rng.uniform(*TRAVEL) * size
        if name in HEADINGS:
            heading = HEADINGS[name] + rng.uniform(-DIRECTION_JITTER, DIRECTION_JITTER)
            pose[:, k, :2] = middle[k, :2] + travel * tau[:, None] * _unit(heading)
        elif name.startswith("rotate_"):
            pose[:, k, 2] = middle[k, 2] + rng.uniform(*SPIN) * (1 if name == "rotate_clockwise" else -1) * tau
        elif name in ("grow", "shrink"):
            pose[:, k, 3] = middle[k, 3] * (rng.uniform(*GROWTH) ** (1 if name == "grow" else -1)) ** tau
        else:  # move_then_stop / stop_then_move: each in its own direction, all stop (start) at the middle
            step = np.minimum(tau, 0) if name == "move_then_stop" else np.maximum(tau, 0)
            pose[:, k, :2] = middle[k, :2] + travel * step[:, None] * _unit(rng.uniform(0, 2 * np.pi))


def _sample_motion(rng, label: int, size: int, frames: int, camera_motion: str):
    """Poses (T, N, 4) and camera (T, 3, 3) of a scene, and the camera mode drawn.

    The middle-frame poses are drawn the same way for every class; then every object
    gets the class motion. Nothing is redrawn, so objects may leave the frame.
    """
    tau = (np.arange(frames) - (frames - 1) // 2) / (frames - 1)  # about -0.5 .. 0.5, 0 at the middle frame
    count = rng.integers(OBJECTS[0], OBJECTS[1] + 1)
    centre = rng.uniform(*PLACE, (count, 2)) * size
    angle = rng.uniform(0, 2 * np.pi, count)
    radius = rng.uniform(*RADIUS, count) * size
    pose = np.repeat(np.concatenate([centre, angle[:, None], radius[:, None]], 1)[None], frames, 0)
    _class_motion(rng, CLASSES[label], pose, tau, size)
    camera, mode = _camera(rng, camera_motion, size, tau)
    return pose, camera, mode


# ---------------------------------------------------------------- appearance


def _colour(rng, saturation, value) -> np.ndarray:
    """Random RGB colour in 0..255 with saturation and value drawn from the given ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))) * 255


def _outline(shape: str) -> np.ndarray:
    """Polygon (V, 2) of a shape inscribed in the unit circle, pointing up."""
    if shape == "circle":
        turns = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(turns), np.sin(turns)], 1)
    if shape == "cross":
        a, b = 0.35, 0.95
        return np.array(
            [[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]]
        )
    corners = {"triangle": 3, "square": 4, "pentagon": 5, "star": 10}[shape]
    turns = -np.pi / 2 + np.arange(corners) * 2 * np.pi / corners
    reach = np.where(np.arange(corners) % 2, 0.45, 1.0) if shape == "star" else np.ones(corners)
    return np.stack([np.cos(turns), np.sin(turns)], 1) * reach[:, None]


def _pattern(rng, kind: str, grid: np.ndarray, patch: int) -> np.ndarray:
    """Texture in [0, 1] on local coordinates `grid` (P, P, 2); never rotation-invariant."""
    x, y = grid[..., 0], grid[..., 1]
    if kind == "stripes":
        heading, cycles = rng.uniform(0, np.pi), rng.uniform(1.5, 3.0)
        return 0.5 + 0.5 * np.sin(np.pi * cycles * (x * np.cos(heading) + y * np.sin(heading)) + rng.uniform(0, 6.3))
    if kind == "checker":
        cells = rng.uniform(1.0, 2.0)
        return ((np.floor((x + 1) * cells) + np.floor((y + 1) * cells)) % 2).astype(np.float64)
    if kind == "rings":
        origin, cycles = rng.uniform(-0.6, 0.6, 2), rng.uniform(1.5, 3.0)
        return 0.5 + 0.5 * np.cos(np.pi * cycles * np.hypot(x - origin[0], y - origin[1]))
    coarse = rng.uniform(0, 1, (4, 4))
    return cv2.resize(coarse, (patch, patch), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _sprite(rng, shape: str, patch: int) -> np.ndarray:
    """(P, P, 4) float32 premultiplied RGB + alpha of a textured shape over local [-1, 1]^2.

    Drawn 4x larger and area-averaged down, so texture and edges are anti-aliased;
    P is the object's largest size on screen, so rendering never magnifies nor aliases much.
    """
    big = patch * 4
    alpha = np.zeros((big, big), np.uint8)
    cv2.fillPoly(alpha, [np.round((_outline(shape) + 1) / 2 * big).astype(np.int32)], 255)
    axis = (np.arange(big) + 0.5) * 2 / big - 1
    grid = np.stack(np.meshgrid(axis, axis), -1)
    pattern = _pattern(rng, TEXTURES[rng.integers(len(TEXTURES))], grid, big)[..., None]
    light = _colour(rng, (0.4, 1.0), (0.7, 1.0))
    dark = light * rng.uniform(0.25, 0.55)
    rgba = np.concatenate([(dark + (light - dark) * pattern) * (alpha[..., None] / 255), alpha[..., None] / 255], -1)
    return cv2.resize(rgba.astype(np.float32), (patch, patch), interpolation=cv2.INTER_AREA)


def _background(rng, side: int) -> np.ndarray:
    """(side, side, 3) float32: two dull colours mixed by smooth noise, plus fine texture."""
    a, b = _colour(rng, (0.0, 0.5), (0.15, 0.55)), _colour(rng, (0.0, 0.5), (0.15, 0.55))
    mix = cv2.resize(rng.uniform(0, 1, (5, 5)), (side, side), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    axis = np.arange(side) / side * 2 - 1
    grid = np.stack(np.meshgrid(axis, axis), -1)
    fine = _pattern(rng, TEXTURES[rng.integers(len(TEXTURES))], grid * rng.uniform(3, 6), side)
    image = a + (b - a) * mix[..., None] + rng.uniform(*TEXTURE) * (fine[..., None] - 0.5)
    return image.astype(np.float32)


def sample_scene(
    label: int, index: int, size: int = 32, frames: int = 24, seed: int = 0, camera_motion: str = "none"
) -> Scene:
    """The scene of video `index` of class `label`; a pure function of its arguments."""
    rng = np.random.default_rng([seed, label, index, size, frames, CAMERA_MOTIONS.index(camera_motion)])
    pose, camera, mode = _sample_motion(rng, label, size, frames, camera_motion)
    shapes = rng.integers(len(SHAPES), size=pose.shape[1]).tolist()
    largest = 2 * pose[..., 3].max(0) * camera[:, 0, 0].max()  # (N,) on-screen diameter, px
    sprites = [_sprite(rng, SHAPES[k], max(8, int(np.ceil(d)))) for k, d in zip(shapes, largest)]
    margin = round(CANVAS_MARGIN * size)
    return Scene(
        label,
        pose.astype(np.float32),
        camera.astype(np.float32),
        shapes,
        sprites,
        _background(rng, size + 2 * margin),
        margin,
        float(rng.uniform(*NOISE)),
        int(rng.integers(2**63)),
        size,
        mode,
    )


# ---------------------------------------------------------------- rendering


def _object_to_image(pose: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """(3, 3) map from object-local [-1, 1]^2 coordinates to image pixels."""
    cx, cy, angle, radius = (float(v) for v in pose)
    cos, sin = np.cos(angle) * radius, np.sin(angle) * radius
    return camera.astype(np.float64) @ _affine(cos, -sin, sin, cos, cx, cy)


def render(scene: Scene, noise: bool = True, times=None) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T', S, S, 3) RGB and object-id mask uint8 (T', S, S) at frames `times` (default all).

    Mask value k + 1 marks pixels where object k is visible, 0 the background.
    Object 0 (the primary of the ground truth) is drawn last, so no other object hides it.
    `noise=False` leaves out the pixel noise (for exact checks against the truth).
    """
    times = range(len(scene.pose)) if times is None else list(times)
    size = scene.size
    canvas = _affine(tx=-scene.margin, ty=-scene.margin)  # canvas px -> scene
    order = list(range(1, len(scene.sprites))) + [0]
    video = np.empty((len(times), size, size, 3), np.float32)
    mask = np.zeros((len(times), size, size), np.uint8)
    for i, t in enumerate(times):
        warp = (scene.camera[t].astype(np.float64) @ canvas)[:2]
        image = cv2.warpAffine(
            scene.background, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        for k in order:
            patch = scene.sprites[k].shape[0]
            local = _affine(2 / patch, 0, 0, 2 / patch, 1 / patch - 1, 1 / patch - 1)  # sprite px -> local
            warp = (_object_to_image(scene.pose[t, k], scene.camera[t]) @ local)[:2]
            layer = cv2.warpAffine(scene.sprites[k], warp, (size, size), flags=cv2.INTER_LINEAR)
            alpha = layer[..., 3:]
            image = image * (1 - alpha) + layer[..., :3]
            mask[i][alpha[..., 0] > 0.5] = k + 1
        if noise:
            grain = np.random.default_rng([scene.noise_seed, t]).standard_normal(image.shape, np.float32)
            image = image + grain * scene.noise
        video[i] = image
    return np.clip(np.rint(video), 0, 255).astype(np.uint8), mask


def _ground_truth(scene: Scene, mask: np.ndarray, index: int) -> dict:
    centre = np.einsum("tij,tj->ti", scene.camera[:, :2, :2], scene.pose[:, 0, :2]) + scene.camera[:, :2, 2]
    box = np.full((len(mask), 4), np.nan, np.float32)
    for t, ids in enumerate(mask):
        ys, xs = np.nonzero(ids == 1)
        if len(xs):
            box[t] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return {
        "label": np.int64(scene.label),
        "class_name": np.str_(CLASSES[scene.label]),
        "index": np.int64(index),
        "center": centre.astype(np.float32),
        "box": box,
        "mask": mask,
        "camera": scene.camera[:, :2, :].copy(),
        "pose": scene.pose,
        "shapes": np.array(scene.shapes, np.int64),
        "camera_motion": np.str_(scene.camera_motion),
    }


def render_video(
    label: int | str, index: int, size: int = 32, frames: int = 24, seed: int = 0, camera_motion: str = "none"
) -> tuple[np.ndarray, dict]:
    """One video in memory: frames uint8 (T, S, S, 3) RGB and its ground truth.

    Ground truth (what the .npz beside each written video holds):
      label, class_name, index, camera_motion (none, pan or zoom)
      center  float32 (T, 2)      primary object's centre, image px
      box     float32 (T, 4)      x0, y0, x1, y1 of its visible pixels (NaN if none)
      mask    uint8 (T, S, S)     object id + 1 per pixel, 0 = background; 1 = primary
      camera  float32 (T, 2, 3)   scene -> image affine (identity at the middle frame)
      pose    float32 (T, N, 4)   every object's cx, cy, angle (rad, clockwise), radius, scene px
      shapes  int64 (N,)          index into SHAPES
    """
    label = CLASSES.index(label) if isinstance(label, str) else int(label)
    scene = sample_scene(label, index, size, frames, seed, camera_motion)
    video, mask = render(scene)
    return video, _ground_truth(scene, mask, index)


# ---------------------------------------------------------------- truth checks


def reverse_truth(truth: dict) -> dict:
    """Ground truth of the same clip played backwards (time-indexed arrays flipped)."""
    frames = len(truth["pose"])
    return {
        key: (
            value[::-1].copy()
            if isinstance(value, np.ndarray) and value.ndim and len(value) == frames and key != "shapes"
            else value
        )
        for key, value in truth.items()
    }


def motion_class(truth: dict) -> str:
    """The class the ground-truth motion shows, decided from scene poses alone.

    This is the definition of the classes as a checkable rule on all objects
    together: size change, rotation, a stop in one half, then whether the objects
    move together (a direction) or toward / away from their common centre.
    """
    pose = np.asarray(truth["pose"], np.float64)  # (T, N, 4)
    growth = np.log(pose[-1, :, 3] / pose[0, :, 3]).mean()
    if abs(growth) > np.log(1.3):
        return "grow" if growth > 0 else "shrink"
    turn = (pose[-1, :, 2] - pose[0, :, 2]).mean()
    if abs(turn) > np.pi / 2:
        return "rotate_clockwise" if turn > 0 else "rotate_counterclockwise"
    middle = (len(pose) - 1) / 2
    first = np.linalg.norm(pose[int(np.floor(middle)), :, :2] - pose[0, :, :2], axis=-1).sum()
    second = np.linalg.norm(pose[-1, :, :2] - pose[int(np.ceil(middle)), :, :2], axis=-1).sum()
    if min(first, second) < 0.25 * max(first, second):
        return "move_then_stop" if first > second else "stop_then_move"
    moves = pose[-1, :, :2] - pose[0, :, :2]  # (N, 2)
    if np.linalg.norm(moves.mean(0)) < 0.5 * np.linalg.norm(moves, axis=-1).mean():  # no common direction
        spread = [np.linalg.norm(p[:, :2] - p[:, :2].mean(0), axis=-1).mean() for p in (pose[0], pose[-1])]
        return "approach" if spread[1] < spread[0] else "separate"
    dx, dy = moves.mean(0)
    if abs(dx) > abs(dy):
        return "move_right" if dx > 0 else "move_left"
    return "move_down" if dy > 0 else "move_up"


def true_flow(truth: dict) -> np.ndarray:
    """Dense ground-truth flow float32 (T-1, S, S, 2), (dx, dy) px carrying frame t to t+1.

    Each pixel moves with the object visible there (background: with the camera).
    """
    pose, mask = truth["pose"], truth["mask"]
    camera = np.concatenate([truth["camera"], np.tile([[[0, 0, 1]]], (len(pose), 1, 1))], 1)
    size = mask.shape[1]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    points = np.stack([xs, ys, np.ones_like(xs)], -1)
    flow = np.zeros((len(pose) - 1, size, size, 2), np.float32)
    for t in range(len(pose) - 1):
        maps = [camera[t + 1] @ np.linalg.inv(camera[t])]
        maps += [
            _object_to_image(pose[t + 1, k], camera[t + 1]) @ np.linalg.inv(_object_to_image(pose[t, k], camera[t]))
            for k in range(pose.shape[1])
        ]
        moved = np.einsum("hwij,hwj->hwi", np.stack(maps)[mask[t]][..., :2, :], points)
        flow[t] = moved - points[..., :2]
    return flow


# ---------------------------------------------------------------- data set on disk


def video_name(label: int, index: int) -> str:
    """Path of a video relative to OUT, as the lists name it."""
    return f"videos/{CLASSES[label]}/{CLASSES[label]}_{index:05d}.mp4"


def val_count(videos_per_class: int) -> int:
    """Videos per class in val: the last ones of each class."""
    return max(round(VAL_FRACTION * videos_per_class), 1 if videos_per_class >= 2 else 0)


def _arguments(videos_per_class, size, frames, fps, seed, camera_motion) -> dict:
    """Check arguments; the dict that identifies a data set in meta.json."""
    if videos_per_class < 1:
        raise SyntheticError(f"--videos-per-class must be at least 1, got {videos_per_class}")
    if size < MIN_SIZE:
        raise SyntheticError(f"--size {size} is too small for the shapes: use at least {MIN_SIZE} px")
    if size % 2:
        raise SyntheticError(f"--size {size} must be even (H.264 yuv420p needs even sizes)")
    if frames < MIN_FRAMES:
        raise SyntheticError(f"--frames {frames} is too few to show the motions: use at least {MIN_FRAMES}")
    if fps < 1:
        raise SyntheticError(f"--fps must be at least 1, got {fps}")
    if camera_motion not in CAMERA_MOTIONS:
        raise SyntheticError(f"--camera-motion must be one of {', '.join(CAMERA_MOTIONS)}, got {camera_motion!r}")
    return {
        "videos_per_class": int(videos_per_class),
        "size": int(size),
        "frames": int(frames),
        "fps": int(fps),
        "seed": int(seed),
        "camera_motion": camera_motion,
    }


def _write_atomic(path: Path, write) -> None:
    """Call write(temp_path), then rename onto path: readers never see a partial file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _prepare_out(out: Path, meta: dict) -> None:
    """Create OUT or check that it holds this same data set; write meta.json."""
    if out.exists() and not out.is_dir():
        raise SyntheticError(f"OUT {out} is a file, not a directory")
    meta_path = out / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise SyntheticError(f"OUT {out} has an unreadable meta.json ({err})") from None
        if (
            old.get("generator") != meta["generator"]
            or old.get("version") != meta["version"]
            or old.get("arguments") != meta["arguments"]
        ):
            theirs = old.get("arguments") or {}
            diff = ", ".join(
                f"{k}={theirs.get(k)!r} there, {v!r} asked" for k, v in meta["arguments"].items() if theirs.get(k) != v
            )
            if old.get("version") != meta["version"]:
                diff = f"generator version {old.get('version')!r} there, {meta['version']} here" + (
                    ", " + diff if diff else ""
                )
            raise SyntheticError(f"OUT {out} holds a different data set ({diff}); choose another OUT")
        return
    if out.is_dir() and any(out.iterdir()):
        raise SyntheticError(f"OUT {out} is not empty and holds no motionmae synthetic data set (no meta.json)")
    try:
        for label in range(len(CLASSES)):
            (out / video_name(label, 0)).parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    except OSError as err:
        raise SyntheticError(f"cannot write to OUT {out}: {err.strerror or err}") from None


def _finished(out: Path, label: int, index: int) -> bool:
    video = out / video_name(label, index)
    return video.is_file() and video.with_suffix(".npz").is_file()


def write_one(out, label: int, index: int, size: int, frames: int, fps: int, seed: int, camera_motion: str) -> None:
    """Render one video and write its .mp4, then its .npz (the .npz marks it finished)."""
    from motionmae.io.video import write_video

    video, truth = render_video(label, index, size, frames, seed, camera_motion)
    path = Path(out) / video_name(label, index)
    write_video(path, video, fps=fps, options=X264_OPTIONS)
    _write_atomic(path.with_suffix(".npz"), lambda p: np.savez_compressed(p, **truth))


def _write_job(job: tuple) -> None:
    write_one(*job)


def make_dataset(
    out,
    videos_per_class: int = 100,
    size: int = 32,
    frames: int = 24,
    fps: int = 25,
    seed: int = 0,
    camera_motion: str = "none",
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Write the data set to `out` (resuming a partial one); returns the folder.

    Videos already finished (both .mp4 and .npz present) are kept; the lists are
    written last and name every video, so they never name a half-written one.
    """
    from tqdm import tqdm

    arguments = _arguments(videos_per_class, size, frames, fps, seed, camera_motion)
    if workers < 1:
        raise SyntheticError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    meta = {
        "generator": "motionmae.synthetic",
        "version": GENERATOR_VERSION,
        "arguments": arguments,
        "seed": int(seed),
        "classes": CLASSES,
        "val_per_class": val_count(videos_per_class),
    }
    _prepare_out(out, meta)
    for leftover in (out / "videos").glob("*/.*.tmp.*"):  # temp files of an interrupted run
        leftover.unlink()
    everything = [(label, i) for label in range(len(CLASSES)) for i in range(videos_per_class)]
    todo = [
        (str(out), label, i, size, frames, fps, seed, camera_motion)
        for label, i in everything
        if not _finished(out, label, i)
    ]
    bar = tqdm(
        total=len(everything),
        initial=len(everything) - len(todo),
        unit="video",
        desc="make-synthetic",
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        workers = min(workers, len(todo))
        if workers <= 1:
            for job in todo:
                _write_job(job)
                bar.update()
        else:
            # spawned, not forked: a forked worker inherits the parent's FFmpeg state and can hang
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            try:
                for _ in pool.map(_write_job, todo, chunksize=4):
                    bar.update()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    first_val = videos_per_class - val_count(videos_per_class)
    for split, keep in [("train", lambda i: i < first_val), ("val", lambda i: i >= first_val)]:
        lines = "".join(f"{video_name(label, i)} {label}\n" for label, i in everything if keep(i))
        _write_atomic(out / f"{split}.csv", lambda p: p.write_text(lines))  # noqa: B023 (called right here)
    _write_atomic(out / "classes.txt", lambda p: p.write_text("".join(c + "\n" for c in CLASSES)))
    return out
