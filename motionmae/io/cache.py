"""The motion cache: camera-compensated flow of every video, extracted once, read by window.

Layout on disk:

    ROOT/flow-<key>/params.json           the extraction parameters (key = their hash)
    ROOT/flow-<key>/entries/<video>.flow  one file per video; <video> is its key (below)
    ROOT/flow-<key>/report[-i-of-n].json  the last `prepare` run (`io.prepare`): videos read and
                                          skipped with reasons (`tally.VideoTally`), notes, done, cached

Changing any parameter changes `<key>`, so old and new entries never mix.
A video's key (`common.lists.video_key`) is its path relative to the list
file's folder (or to the folder given to `prepare`), e.g.
`videos/jump/jump_00007.mp4`, so two videos with the same file name in
different folders get different entries.

What is stored: the flow of the frames decoded at `short_side`, area-averaged
onto a grid `stride` times coarser (1/4 by default), camera motion removed,
clamped to ±20 px, quantized to 8 bits (step 20/127 px) and encoded per flow
field as a gray JPEG (lossy, default) or PNG (lossless) holding dx above dy.
An entry holds the frames that decode in one sequential pass, whatever the
container claims: a file whose container counts one frame more than decodes,
or a truncated one, is stored with the frames it has and noted in the report;
only files with no decodable frame are skipped (listed in the report).
Vectors stay in pixels of the decoded frames. On bikes.mp4 this is about 0.84x
the bytes of the source video and moves 6-step trajectories by ~0.4 px on
average (bench/flow_bench.py, docs/benchmarks.md).

Shot cuts (`motionmae.motion.cuts`): each frame pair's warp residual is scored from the
raw flow while it is at hand; the pairs that lie across a cut are stored with
the entry (`EntryInfo.cuts`, and the scores, to see why).

Entry file: MAGIC, the encoded fields back to back, a JSON header (geometry,
byte offsets of every field, cut scores and cuts, parameters), then a 20-byte trailer
(header offset u64, header length u32, MAGIC). Reading flows a..b reads one
byte range and decodes only those fields. Entries are written to a temporary
file and renamed, so a killed run never leaves a partial entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from motionmae.common.files import atomic_open, write_atomic
from motionmae.errors import MotionMAEError
from motionmae.io.video import VideoError, VideoReader
from motionmae.motion.cuts import CutParams, find_cuts, warp_residual
from motionmae.motion.flow import FlowEstimator, FlowParams, compensate

# Part of the folder key: bump when a video's entry changes (2: camera fit, 3: shot cuts,
# 4: the faster DIS "balanced" preset and USAC camera fit, 5: 2 DIS refinement iterations).
FORMAT_VERSION = 5
MAGIC = b"MMEFLOW1"
TRAILER = struct.Struct("<QI8s")  # header offset, header length, MAGIC
CODECS = {"jpeg": ".jpg", "png": ".png"}


class CacheError(MotionMAEError):
    """A missing or unreadable cache entry, or a bad window; the message names the video."""


@dataclass(frozen=True)
class CacheParams:
    """Everything that determines a cache entry's bytes; its hash names the cache folder."""

    flow: FlowParams = FlowParams()
    short_side: int | None = 256  # decode resolution (pixels); None keeps the source size
    stride: int = 4  # store the field on a grid `stride` times coarser than the frames
    codec: str = "jpeg"  # jpeg (lossy, compact) | png (lossless after quantization)
    quality: int = 90  # JPEG quality
    cuts: CutParams = CutParams()  # shot-cut detection

    @property
    def step(self) -> float:
        """Quantization step (px): ±clamp maps onto codes 1..255 around 128."""
        return self.flow.clamp / 127

    def key(self) -> str:
        text = json.dumps({"version": FORMAT_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    @classmethod
    def from_dict(cls, values: dict) -> CacheParams:
        return cls(**{**values, "flow": FlowParams(**values["flow"]), "cuts": CutParams(**values["cuts"])})


@dataclass(frozen=True)
class EntryInfo:
    """Header of one entry: geometry in frames at `short_side` and in the stored grid."""

    video: str
    num_frames: int  # frames of the video; the entry holds num_frames - 1 flow fields
    fps: float
    frame_size: tuple[int, int]  # (height, width) of the decoded frames, the unit of the vectors
    grid_size: tuple[int, int]  # (height, width) of the stored field
    source_bytes: int  # size of the video file it came from
    offsets: np.ndarray  # int64 (num_frames,): byte range of field t is offsets[t]:offsets[t+1]
    cut_scores: np.ndarray  # float32 (num_flows,): warp residual of each frame pair (motionmae.motion.cuts)
    cuts: np.ndarray  # bool (num_flows,): True where frames t and t+1 lie across a shot cut

    @property
    def num_flows(self) -> int:
        return self.num_frames - 1


# ---------------------------------------------------------------- encoding


def encode_field(flow: np.ndarray, params: CacheParams) -> bytes:
    """Quantize a float32 `(h, w, 2)` field (px) and encode it as one gray image (dx above dy)."""
    height, width = flow.shape[:2]
    rows = -(-height // 8) * 8  # pad each plane to whole JPEG blocks so dx and dy never share one
    image = np.empty((2, rows, width), np.uint8)
    image[:, :height] = np.moveaxis(np.clip(np.rint(flow / params.step), -127, 127) + 128, 2, 0)
    image[:, height:] = image[:, height - 1 : height]
    options = [cv2.IMWRITE_JPEG_QUALITY, params.quality] if params.codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ok, data = cv2.imencode(CODECS[params.codec], image.reshape(2 * rows, width), options)
    if not ok:
        raise CacheError(f"could not encode a {params.codec} field")
    return data.tobytes()


def decode_field(data: bytes, grid_size: tuple[int, int], step: float) -> np.ndarray:
    """Inverse of `encode_field`: float32 `(h, w, 2)` in px."""
    height, width = grid_size
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CacheError("a flow field does not decode")
    rows = image.shape[0] // 2
    codes = np.stack([image[:height], image[rows : rows + height]], axis=-1)
    return (codes.astype(np.float32) - 128) * step


# ---------------------------------------------------------------- the cache


class MotionCache:
    """Flow entries for one set of `CacheParams` under `root`.

    cache = MotionCache("cache/motion")                 # default parameters
    flow = cache.read("videos/a.mp4", 10, 34, size=(224, 224), crop=(16, 0, 256, 256))
    """

    def __init__(self, root, params: CacheParams = CacheParams()):
        self.root = Path(root)
        self.params = params
        self.dir = self.root / f"flow-{params.key()}"
        self._infos: dict[str, EntryInfo] = {}

    @classmethod
    def from_dir(cls, path) -> MotionCache:
        """Open an existing `ROOT/flow-<key>` folder with the parameters it was made with."""
        path = Path(path)
        try:
            values = dict(json.loads((path / "params.json").read_text()))
            version = values.pop("version", "2 or older")
            if version != FORMAT_VERSION:
                raise CacheError(
                    f"{path}: motion cache of format {version}; this motionmae reads format "
                    f"{FORMAT_VERSION}: run `motionmae prepare` again to rebuild it"
                )
            params = CacheParams.from_dict(values)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise CacheError(f"{path}: not a motion cache folder ({err})") from None
        return cls(path.parent, params)

    def entry_path(self, video: str) -> Path:
        """File of a video key; `..` components are neutralized so entries stay inside the cache."""
        parts = [p if p not in ("", ".", "..") else "_" for p in video.split("/")]
        return self.dir / "entries" / Path(*parts).with_name(parts[-1] + ".flow")

    def has(self, video: str, path=None) -> bool:
        """True when a complete entry exists for this video key; given the video file, also that the
        entry was made from a file of its size (a replaced video is extracted again)."""
        try:
            info = self.info(video)
        except CacheError:
            return False
        return path is None or info.source_bytes == os.path.getsize(path)

    def info(self, video: str) -> EntryInfo:
        """Header of an entry (kept in memory after the first read)."""
        if video not in self._infos:
            self._infos[video] = self._read_header(video)
        return self._infos[video]

    def _read_header(self, video: str) -> EntryInfo:
        path = self.entry_path(video)
        try:
            with self._open_entry(video) as f:
                f.seek(-TRAILER.size, os.SEEK_END)
                offset, length, magic = TRAILER.unpack(f.read(TRAILER.size))
                if magic != MAGIC:
                    raise CacheError(f"{video}: damaged cache entry {path}")
                f.seek(offset)
                header = json.loads(f.read(length))
            cuts = np.zeros(header["num_frames"] - 1, bool)
            cuts[np.asarray(header["cuts"], np.int64)] = True
            return EntryInfo(
                video=video,
                num_frames=header["num_frames"],
                fps=header["fps"],
                frame_size=tuple(header["frame_size"]),
                grid_size=tuple(header["grid_size"]),
                source_bytes=header["source_bytes"],
                offsets=np.asarray(header["offsets"], np.int64),
                cut_scores=np.asarray(header["cut_scores"], np.float32),
                cuts=cuts,
            )
        except FileNotFoundError:
            raise CacheError(f"{video}: not in the motion cache {self.dir}") from None
        except (OSError, ValueError, KeyError, IndexError, struct.error) as err:
            raise CacheError(f"{video}: unreadable cache entry {path} ({err.__class__.__name__}: {err})") from None

    def read(
        self,
        video: str,
        start: int,
        stop: int,
        size: tuple[int, int] | None = None,
        crop: tuple[int, int, int, int] | None = None,
        flip: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Flow fields `start..stop-1` (field t carries frame t to t+1): float32 `(stop-start, H, W, 2)`.

        `crop = (x, y, width, height)` is a box in pixels of the decoded frames
        (`info(video).frame_size`; default the whole frame); `size = (H, W)` the
        output resolution (default the crop's); `flip` mirrors it left-right (dx
        negated). Vectors are in output pixels. `out`: a float32 array of that
        shape to write into (returned), rather than a new one.
        """
        info = self.info(video)
        if not 0 <= start < stop <= info.num_flows:
            raise CacheError(f"{video}: flow window [{start}, {stop}) outside [0, {info.num_flows})")
        return self.resample(video, self.stored(video, np.arange(start, stop)), size, crop, flip, out)

    def stored(self, video: str, flows) -> np.ndarray:
        """Fields `flows` (sorted distinct indices) as stored: float32 `(len(flows), h, w, 2)` on the
        grid `info(video).grid_size`, px of the decoded frames. Reads one byte range."""
        info = self.info(video)
        flows = np.asarray(flows, np.int64)
        if len(flows) and not 0 <= flows[0] <= flows[-1] < info.num_flows:
            raise CacheError(f"{video}: flow fields {flows[0]}..{flows[-1]} outside [0, {info.num_flows})")
        fields = np.empty((len(flows), *info.grid_size, 2), np.float32)
        if not len(flows):
            return fields
        base = int(info.offsets[flows[0]])
        with self._open_entry(video) as f:
            f.seek(base)
            data = f.read(int(info.offsets[flows[-1] + 1]) - base)
        for t, field_ in zip(flows, fields):
            field_[...] = decode_field(
                data[info.offsets[t] - base : info.offsets[t + 1] - base], info.grid_size, self.params.step
            )
        return fields

    def resample(
        self,
        video: str,
        fields: np.ndarray,
        size: tuple[int, int] | None = None,
        crop: tuple[int, int, int, int] | None = None,
        flip: bool = False,
        out=None,
    ):
        """Stored fields `(n, h, w, 2)` (`stored`) bilinearly resampled onto the output pixels of `crop`
        resized to `size`, mirrored when `flip` (arguments as in `read`): float32 `(n, H, W, 2)`, vectors
        in output px. `out`: an array of that shape, or a list of n `(H, W, 2)` arrays, to write into.

        Two fields at a time, as one 4-channel image: OpenCV 5 warps 1 or 4 channels on a fast
        path with exact coordinates, 2 channels on a slower one that rounds them to 1/32 px (up to
        0.9 px off on a noisy field); about 3x faster per field than one 2-channel warp each.
        """
        frame_h, frame_w = self.info(video).frame_size
        grid_h, grid_w = fields.shape[1:3]
        x0, y0, crop_w, crop_h = crop if crop is not None else (0, 0, frame_w, frame_h)
        out_h, out_w = size if size is not None else (crop_h, crop_w)
        if out is None:
            out = np.empty((len(fields), out_h, out_w, 2), np.float32)
        sx, sy = crop_w / out_w, crop_h / out_h  # frame px per output px
        gx, gy = grid_w / frame_w, grid_h / frame_h  # grid cells per frame px
        # output pixel centre u -> frame x = x0 + (u + 0.5) * sx - 0.5 -> grid (x + 0.5) * gx - 0.5;
        # mirrored: u -> out_w - 1 - u
        row = [-sx * gx, 0, (x0 + (out_w - 0.5) * sx) * gx - 0.5] if flip else [sx * gx, 0, (x0 + 0.5 * sx) * gx - 0.5]
        matrix = np.array([row, [0, sy * gy, (y0 + 0.5 * sy) * gy - 0.5]])
        scale = (-1 / sx if flip else 1 / sx, 1 / sy) * 2  # vectors in output px, per channel
        for i in range(0, len(fields), 2):
            pair = fields[i : i + 2]
            four = cv2.multiply(cv2.merge([pair[0], pair[-1]]), scale)  # type: ignore[call-overload]  # a per-channel scalar
            warped = cv2.warpAffine(
                four,
                matrix,
                (out_w, out_h),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
            targets = [out[i + k] for k in range(len(pair))]
            cv2.mixChannels([warped], targets, [0, 0, 1, 1, 2, 2, 3, 3][: 4 * len(pair)])
        return out

    def _open_entry(self, video: str):
        """The entry of a video key, open for binary reading; FileNotFoundError when there is none."""
        return open(self.entry_path(video), "rb")

    def cuts(self, video: str, start: int, stop: int) -> np.ndarray:
        """Bool `(stop - start,)`: pair t (frames t, t+1) lies across a shot cut; False past the last pair."""
        cuts = self.info(video).cuts
        return np.concatenate([cuts[start:stop], np.zeros(max(0, stop - max(start, len(cuts))), bool)])

    # ------------------------------------------------------------ writing

    def write_params(self) -> None:
        """Create the cache folder and its params.json (atomically, once)."""
        path = self.dir / "params.json"
        if path.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        values = {"version": FORMAT_VERSION, **dataclasses.asdict(self.params)}
        write_atomic(path, (json.dumps(values, indent=2) + "\n").encode())

    def extract(self, video: str, path) -> tuple[int, str | None]:
        """Compute and store the entry of one video file; returns its frame count (what decoded) and a
        note when that differs from the container's count or the file is damaged, else None.

        Raises `VideoError` for files with no decodable frame.
        """
        with VideoReader(path, self.params.short_side, cv2.getNumThreads()) as reader:
            frames = self._write_entry(video, reader)
            declared, truncated = reader.info.container_frames, reader.info.truncated
        self._infos.pop(video, None)
        if declared > 0 and declared != frames:
            return frames, f"the container says {declared} frames, {frames} decode; stored {frames}"
        return frames, f"truncated or damaged: stored the {frames} frames that decode" if truncated else None

    def _write_entry(self, video: str, reader: VideoReader) -> int:
        """Write the entry file of one video: temp file, fsync, rename; returns its frame count."""
        entry = self.entry_path(video)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(entry, clear_stale=True) as f:
            header = self._write_fields(f, reader)
            body = json.dumps({"video": video, "params": dataclasses.asdict(self.params), **header}).encode()
            f.write(body + TRAILER.pack(header["offsets"][-1], len(body), MAGIC))
        return header["num_frames"]

    def _write_fields(self, f, reader: VideoReader) -> dict:
        params, info, path = self.params, reader.info, reader.path
        grid = (-(-reader.height // params.stride), -(-reader.width // params.stride))  # pair_flow's grid
        estimator = FlowEstimator(params.flow.method, params.flow.preset)
        width, height = reader.width, reader.height
        f.write(MAGIC)
        offsets, scores = [len(MAGIC)], []
        previous = None
        for _, gray, _, _ in reader.sequential(gray=True):
            if previous is not None:
                raw = estimator(previous, gray)
                scores.append(round(warp_residual(previous, gray, raw), 2))
                flow = compensate(raw, previous, gray, params.flow.compensation, params.flow.clamp, params.stride)
                f.write(encode_field(flow, params))
                offsets.append(f.tell())
            previous = gray
        if previous is None:
            raise VideoError(path, "no frame decodes")
        return {
            "num_frames": len(offsets),  # what decoded (a single frame stores no field)
            "fps": info.fps,
            "frame_size": [height, width],
            "grid_size": list(grid),
            "source_bytes": os.path.getsize(path),
            "offsets": offsets,
            "cut_scores": scores,
            "cuts": np.flatnonzero(find_cuts(scores, params.cuts)).tolist(),
        }
