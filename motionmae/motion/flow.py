"""Dense optical flow with camera-motion compensation (the paper's Appendix A, on CPU).

Flow fields are float32 `(H, W, 2)`, `(dx, dy)` in pixels; the flow of a frame
pair carries frame t to frame t+1 (`x_{t+1} = x_t + flow[y_t, x_t]`). A video's
flow is `(T-1, H, W, 2)` and is clamped to ±20 px as in the paper.

Backends (OpenCV, no contrib): DIS (default, fast) and Farneback (the paper's
reference family, slower).

Camera motion is a homography `Hc` between consecutive frames, estimated with
RANSAC either from flow correspondences on a sparse grid (default, nearly free)
or from ORB feature matches (independent of the flow). Its flow
`Hc(x) - x` is subtracted from the dense flow, which leaves what moved
relative to the camera, in frame t+1 coordinates. The paper instead warps
frame t+1 by `Hc` and recomputes the flow; for the small inter-frame motions
of video both give the same residual, ours at the cost of one flow per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CLAMP = 20.0  # px, the paper's upper bound on flow values
METHODS = ("dis", "farneback")
# DIS presets: OpenCV's three, plus "balanced" (the default): OpenCV's "fast" with a
# variational refinement that smooths half as much (alpha 10 instead of 20) in 2 iterations
# instead of 5. On the rendered objects of tests/test_flow.py it is about twice as accurate as
# "fast" and "ultrafast", and its field stays smooth enough to be stored at 1/4 resolution.
# The 2 iterations take 0.75x the time of 5 (3: 0.85x) at errors within 6 % (3: 3 %) on real
# frames moved by known motion; patches every 5 px instead of 4 would save as much but let the
# flow fail on more frame pairs (`bench/flow_bench.py --levers`, docs/benchmarks.md).
DIS_PRESETS = {
    "ultrafast": (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, {}),
    "balanced": (
        cv2.DISOPTICAL_FLOW_PRESET_FAST,
        {"VariationalRefinementAlpha": 10.0, "VariationalRefinementIterations": 2},
    ),
    "fast": (cv2.DISOPTICAL_FLOW_PRESET_FAST, {}),
    "medium": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, {}),
}
COMPENSATIONS = ("flow", "features", "none")
MIN_RESIDUAL = 0.05  # px: the refit keeps every point closer than this to the RANSAC homography
STILL_FACTOR = 0.8  # the homography must cut a still camera's median residual by 20 % to be used


def to_gray(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 `(..., H, W, 3)` to gray uint8 `(..., H, W)` (BT.601 luma)."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(frames.astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)


class FlowEstimator:
    """Dense flow between two gray uint8 `(H, W)` frames: `estimator(frame0, frame1) -> (H, W, 2)`.

    `method` is "dis" (with a DIS `preset`, see DIS_PRESETS) or
    "farneback". The estimator keeps OpenCV state, so make one per process.
    """

    def __init__(self, method: str = "dis", preset: str = "balanced"):
        if method not in METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose from {METHODS}")
        if method == "dis" and preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose from {tuple(DIS_PRESETS)}")
        self.method = method
        self.dis: cv2.DISOpticalFlow | None = None
        if method == "dis":
            base, settings = DIS_PRESETS[preset]
            self.dis = cv2.DISOpticalFlow.create(base)
            for name, value in settings.items():
                getattr(self.dis, "set" + name)(value)

    def __call__(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        frame0, frame1 = np.ascontiguousarray(frame0), np.ascontiguousarray(frame1)
        # flow=None (a new array) is what OpenCV's stubs refuse and its functions take
        if self.dis is not None:
            return self.dis.calc(frame0, frame1, None)  # type: ignore[call-overload]
        return cv2.calcOpticalFlowFarneback(  # type: ignore[call-overload]
            frame0, frame1, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
        )


# ---------------------------------------------------------------- camera motion


def homography_from_flow(
    flow: np.ndarray, points: int = 300, threshold: float = 1.0, method: int = cv2.USAC_FAST
) -> np.ndarray:
    """Camera homography `(3, 3)` fitted by RANSAC to the flow at ~`points` grid positions.

    The grid keeps half a cell away from the borders, where flow is least
    reliable. Returns the identity when no plausible homography fits. `method` is
    cv2.findHomography's robust method (cv2.RANSAC: the classic one).
    """
    height, width = flow.shape[:2]
    cell = max(2, int(np.sqrt(height * width / points)))
    ys, xs = np.mgrid[cell // 2 : height : cell, cell // 2 : width : cell]
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()]
    return _ransac_homography(src, dst, threshold, (height, width), method)


def homography_from_features(
    frame0: np.ndarray, frame1: np.ndarray, features: int = 600, threshold: float = 1.0
) -> np.ndarray:
    """Camera homography `(3, 3)` from corners of `frame0` tracked into `frame1` (gray uint8).

    Shi-Tomasi corners matched by pyramidal Lucas-Kanade (sub-pixel, unlike
    descriptor matches), then RANSAC. Independent of the dense flow.
    """
    corners = cv2.goodFeaturesToTrack(frame0, maxCorners=features, qualityLevel=0.01, minDistance=7)
    if corners is None:
        return np.eye(3)
    # nextPts=None (a new array): OpenCV's stubs refuse it, the function takes it
    tracked, found, _ = cv2.calcOpticalFlowPyrLK(  # type: ignore[call-overload]
        frame0, frame1, corners, None, winSize=(21, 21), maxLevel=3
    )
    found = found.ravel() == 1
    return _ransac_homography(corners.reshape(-1, 2)[found], tracked.reshape(-1, 2)[found], threshold, frame0.shape[:2])


def _ransac_homography(
    src: np.ndarray, dst: np.ndarray, threshold: float, size: tuple[int, int], method: int = cv2.USAC_FAST
) -> np.ndarray:
    """RANSAC fit (by default OpenCV's USAC_FAST: uniform samples, MSAC score, local optimization;
    500 iterations at most), refitted on the points within 3 robust standard deviations of it. The
    identity when it fails, when it does not cut the median residual of a still camera (a fit to
    flow noise), or when it is implausible: a camera moving a frame corner by more than CLAMP px,
    or folding the image.

    The refit and the still-camera test matter for sub-pixel motion (small frames): with a
    fixed 1 px threshold an object moving 0.5 px/frame counts as camera, and a homography
    fitted to noise moves parts of a still frame by tenths of a pixel. USAC_FAST finds the
    camera classic RANSAC finds (their camera flows differ by 0.01 px on average over
    bikes.mp4's pairs) in 0.4x its time (`bench/flow_bench.py --levers`).
    """
    if len(src) < 8:
        return np.eye(3)
    homography, _ = cv2.findHomography(src, dst, method, threshold, maxIters=500)
    if homography is None or not np.isfinite(homography).all():
        return np.eye(3)
    residual = _residual(src, dst, homography)
    close = residual <= max(3 * 1.4826 * np.median(residual), MIN_RESIDUAL)
    if close.sum() >= 8:
        refit, _ = cv2.findHomography(src[close], dst[close], 0)
        if refit is not None and np.isfinite(refit).all():
            homography = refit
    if np.median(_residual(src, dst, homography)) > STILL_FACTOR * np.median(_residual(src, dst, np.eye(3))):
        return np.eye(3)  # no better than a still camera: a fit to flow noise
    height, width = size
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    mapped = corners @ homography.T
    if (mapped[:, 2] <= 0).any() or np.linalg.det(homography[:2, :2]) <= 0:
        return np.eye(3)
    if np.abs(mapped[:, :2] / mapped[:, 2:] - corners[:, :2]).max() > CLAMP:
        return np.eye(3)
    return homography


def _residual(src: np.ndarray, dst: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Distance (px) between `dst` and `src` mapped by `homography`, per point."""
    mapped = cv2.perspectiveTransform(src[None].astype(np.float64), homography)[0]
    return np.linalg.norm(mapped - dst, axis=1)


def homography_flow(homography: np.ndarray, height: int, width: int, stride: int = 1) -> np.ndarray:
    """Displacement `Hc(x) - x` float32 `(ceil(H/stride), ceil(W/stride), 2)` in full-frame pixels.

    With `stride > 1` it is evaluated at the centres of the cells of a
    `height x width` frame resized to the strided grid (cv2.resize's geometry).
    """
    rows, cols = -(-height // stride), -(-width // stride)
    x = ((np.arange(cols) + 0.5) * (width / cols) - 0.5)[None, :]
    y = ((np.arange(rows) + 0.5) * (height / rows) - 0.5)[:, None]
    h = homography
    denom = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    dx = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / denom - x
    dy = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / denom - y
    return np.stack([dx, dy], axis=-1).astype(np.float32)


# ---------------------------------------------------------------- flow of frames and videos


@dataclass(frozen=True)
class FlowParams:
    """Everything that determines the compensated flow of a video (part of the cache key)."""

    method: str = "dis"  # dis | farneback
    preset: str = "balanced"  # DIS preset: ultrafast | balanced | fast | medium
    compensation: str = "flow"  # flow | features | none: how the camera homography is found
    clamp: float = CLAMP  # px


def pair_flow(
    frame0: np.ndarray,
    frame1: np.ndarray,
    estimator: FlowEstimator,
    compensation: str = "flow",
    clamp: float = CLAMP,
    stride: int = 1,
) -> np.ndarray:
    """Compensated, clamped flow float32 `(ceil(H/stride), ceil(W/stride), 2)` of two gray frames.

    Vectors stay in full-frame pixels; `stride > 1` area-averages the field
    onto a coarser grid before the camera flow is removed (cheaper, and the
    average of a homography's flow over a cell is its value at the centre).
    """
    return compensate(estimator(frame0, frame1), frame0, frame1, compensation, clamp, stride)


def compensate(
    flow: np.ndarray,
    frame0: np.ndarray,
    frame1: np.ndarray,
    compensation: str = "flow",
    clamp: float = CLAMP,
    stride: int = 1,
) -> np.ndarray:
    """`pair_flow` of the raw flow `(H, W, 2)` the estimator gave for the gray frames `frame0`, `frame1`."""
    return remove_camera(flow, camera_homography(flow, frame0, frame1, compensation), clamp, stride)


def camera_homography(
    flow: np.ndarray, frame0: np.ndarray, frame1: np.ndarray, compensation: str = "flow"
) -> np.ndarray | None:
    """The camera homography `(3, 3)` of a frame pair found as `compensation` says, None for "none"."""
    if compensation not in COMPENSATIONS:
        raise ValueError(f"unknown compensation {compensation!r}; choose from {COMPENSATIONS}")
    if compensation == "flow":
        return homography_from_flow(flow)
    if compensation == "features":
        return homography_from_features(frame0, frame1)
    return None


def remove_camera(flow: np.ndarray, camera: np.ndarray | None, clamp: float = CLAMP, stride: int = 1) -> np.ndarray:
    """Raw flow `(H, W, 2)` area-averaged onto the `stride` grid, minus the flow of `camera`
    (a homography, or None for no camera motion), clamped to ±`clamp` px."""
    height, width = flow.shape[:2]
    if stride > 1:
        flow = cv2.resize(flow, (-(-width // stride), -(-height // stride)), interpolation=cv2.INTER_AREA)
    if camera is not None:
        flow = flow - homography_flow(camera, height, width, stride)
    return np.clip(flow, -clamp, clamp)


def video_flow(frames: np.ndarray, params: FlowParams = FlowParams()) -> np.ndarray:
    """Compensated flow float32 `(T-1, H, W, 2)` of RGB uint8 `(T, H, W, 3)` frames."""
    if len(frames) < 2:
        raise ValueError(f"flow needs at least 2 frames, got {len(frames)}")
    estimator = FlowEstimator(params.method, params.preset)
    gray = to_gray(frames)
    return np.stack(
        [pair_flow(gray[t], gray[t + 1], estimator, params.compensation, params.clamp) for t in range(len(gray) - 1)]
    )
