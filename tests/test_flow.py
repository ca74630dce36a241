"""Flow backends and camera compensation on rendered scenes whose true flow is known."""

import cv2
import numpy as np
import pytest

from motionmae.motion.flow import FlowEstimator, FlowParams, homography_flow, pair_flow, video_flow

HEIGHT, WIDTH = 144, 192


def texture(height, width, seed):
    """Smooth random gray texture, uint8 (height, width)."""
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def render_object(background, sprite, mask, matrix):
    """Paste `sprite` warped by the 2x3 `matrix` (sprite -> frame) onto `background`."""
    size = background.shape[1], background.shape[0]
    warped = cv2.warpAffine(sprite, matrix, size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_LINEAR) > 0.5
    return np.where(inside, warped, background), inside


def object_scene(motion):
    """Two gray frames with a textured disc that translates or rotates, its mask and true flow."""
    background = texture(HEIGHT, WIDTH, seed=1)
    sprite = texture(64, 64, seed=2)
    mask = (np.hypot(*np.mgrid[-31.5:32.5, -31.5:32.5]) < 30).astype(np.float32)
    centre = np.array([80.0, 70.0])
    place = np.array([[1, 0, centre[0] - 31.5], [0, 1, centre[1] - 31.5]])
    if motion == "translate":
        move = np.array([[1, 0, 1.6], [0, 1, -0.8]])
    else:
        angle = np.deg2rad(3.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        move = np.hstack([rotation, (centre - rotation @ centre)[:, None]])
    frame0, inside = render_object(background, sprite, mask, place)
    full_move = np.vstack([move, [0, 0, 1]]) @ np.vstack([place, [0, 0, 1]])
    frame1, _ = render_object(background, sprite, mask, full_move[:2])
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    truth = np.stack(
        [move[0, 0] * xs + move[0, 1] * ys + move[0, 2] - xs, move[1, 0] * xs + move[1, 1] * ys + move[1, 2] - ys],
        axis=-1,
    )
    interior = cv2.erode(inside.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    return frame0, frame1, interior, truth


@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("motion", ["translate", "rotate"])
def test_object_flow_matches_truth(method, motion):
    frame0, frame1, interior, truth = object_scene(motion)
    flow = pair_flow(frame0, frame1, FlowEstimator(method), compensation="none")
    assert flow.shape == (HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    epe = np.linalg.norm(flow - truth, axis=-1)[interior].mean()
    assert epe <= 0.5, f"{method} {motion}: object EPE {epe:.3f} px"


def pan_scene(frames=4, pan=(3.0, 1.0), zoom=1.002):
    """RGB frames of a camera panning (and slightly zooming) over a static scene
    with a square moving on its own; returns frames, background masks and pan."""
    scene = texture(2 * HEIGHT, 2 * WIDTH, seed=3)
    sprite = texture(48, 48, seed=4)
    video, backgrounds = [], []
    for t in range(frames):
        s = zoom**t
        view = np.array([[s, 0, 60 + pan[0] * t], [0, s, 40 + pan[1] * t]])  # frame -> scene
        frame = cv2.warpAffine(scene, view, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        x, y = 30 + 2 * t, 50
        frame[y : y + 48, x : x + 48] = sprite
        background = np.ones((HEIGHT, WIDTH), bool)
        background[y - 12 : y + 60, x - 12 : x + 62] = False
        background[:8], background[-8:], background[:, :8], background[:, -8:] = False, False, False, False
        video.append(np.repeat(frame[..., None], 3, axis=-1))
        backgrounds.append(background)
    return np.stack(video), np.stack(backgrounds), np.array(pan)


@pytest.mark.parametrize("compensation", ["flow", "features"])
def test_camera_pan_is_removed(compensation):
    frames, backgrounds, pan = pan_scene()
    raw = video_flow(frames, FlowParams(compensation="none"))
    fixed = video_flow(frames, FlowParams(compensation=compensation))
    assert raw.shape == fixed.shape == (len(frames) - 1, HEIGHT, WIDTH, 2)
    background = backgrounds[:-1] & backgrounds[1:]
    before = raw[background].mean(axis=0)
    assert np.allclose(before, -pan, atol=0.4), f"raw background flow {before} vs pan {-pan}"
    after = np.linalg.norm(fixed, axis=-1)[background].mean()
    assert after <= 0.3, f"{compensation}: background flow after compensation {after:.3f} px"
    square = np.zeros((HEIGHT, WIDTH), bool)
    square[60:88, 40:68] = True  # moves +2 px/frame in the image, so (2, 0) + pan over the scene
    assert np.linalg.norm(fixed[0][square] - (np.array([2, 0]) + pan), axis=-1).mean() < 0.5


def test_homography_flow_of_a_translation_and_strided_grid():
    shift = np.array([[1, 0, 2.5], [0, 1, -1.0], [0, 0, 1]])
    field = homography_flow(shift, 10, 12, stride=4)
    assert field.shape == (3, 3, 2)
    assert np.allclose(field, [2.5, -1.0])
    zoom = np.diag([2.0, 2.0, 1.0])
    full = homography_flow(zoom, 8, 8)
    assert np.allclose(full[3, 5], [5, 3])  # x -> 2x: displacement equals the position


def test_flow_is_clamped_and_rejects_bad_arguments():
    frames, _, _ = pan_scene(frames=2, pan=(30.0, 0.0), zoom=1.0)
    flow = video_flow(frames, FlowParams(compensation="none"))
    assert np.abs(flow).max() <= 20.0
    with pytest.raises(ValueError, match="unknown flow method"):
        FlowEstimator("tvl1")
    with pytest.raises(ValueError, match="at least 2 frames"):
        video_flow(frames[:1])


def test_still_camera_keeps_a_slow_small_objects_motion():
    """A 12 px object moving 0.5 px/frame over a still, noisy 64 px scene: compensation must not
    mistake it for camera motion (a fixed 1 px RANSAC threshold removed about a third of it)."""
    rng = np.random.default_rng(5)
    background = cv2.resize(texture(64, 64, seed=6), (64, 64))
    sprite = texture(12, 12, seed=7)
    frames, masks = [], []
    for t in range(8):
        x = 20 + 0.5 * t
        frame, inside = render_object(
            background, sprite, np.ones((12, 12), np.float32), np.array([[1, 0, x], [0, 1, 26.0]])
        )
        noisy = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8)
        frames.append(np.repeat(noisy[..., None], 3, axis=-1))
        masks.append(cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    frames, masks = np.stack(frames), np.stack(masks)[:-1]
    raw = video_flow(frames, FlowParams(compensation="none"))[masks].mean(axis=0)
    fixed = video_flow(frames, FlowParams(compensation="flow"))[masks].mean(axis=0)
    assert raw[0] > 0.35, f"object flow without compensation {raw}"
    assert np.linalg.norm(fixed - raw) < 0.1 * np.linalg.norm(raw), f"compensated {fixed} vs raw {raw}"
