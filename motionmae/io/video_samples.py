"""A matrix of codecs and containers, written with PyAV's encoders, for tests and benchmarks.

    paths = write_samples(folder, frames=60, width=96, height=64, gop=12)  # {name: Path}

Every sample shows the same moving texture (`moving_texture`), so each frame
differs from the others and P/B-frames carry motion. The samples hold what real
files do to frame-exact random access: B-pyramids, several reference frames and
open GOPs, a 1/1,000,000 time base with rounded timestamps, an edit list that
cuts the first frames, variable frame rate, pts that do not follow display
order, VP8 hidden frames, MPEG-4 packed B-frames and N-VOPs (packets that show no frame),
and the codecs with and without motion vectors. Samples whose encoder this
FFmpeg build lacks are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from motionmae.io.video import mpeg4_time_bits, mpeg4_vop

RATE = 30  # frames per second of every sample (on average for the VFR one)


@dataclass(frozen=True)
class Sample:
    what: str  # what the sample holds
    encoders: tuple[str, ...]  # the first one available is used
    suffix: str
    options: dict = field(default_factory=dict)  # encoder options; {gop} is replaced
    pix_fmt: str = "yuv420p"
    timing: str = "cfr"  # cfr | us (1/1e6, rounded ms) | edit (first 2 frames before 0) | vfr
    rewrite: str = ""  # pts-dts | hidden | packed | nvop: packets changed after encoding


_X264 = {
    "bf": "3",
    "crf": "20",
    "preset": "fast",
    "x264-params": "b-pyramid=normal:ref=4:open-gop=1:keyint={gop}:min-keyint={gop}:scenecut=0",
}
_MPEG4 = {"bf": "2", "g": "{gop}", "qscale": "3"}

SAMPLES = {
    "h264-mp4": Sample("H.264 in MP4, B-pyramid, 4 refs, open GOP", ("libx264",), ".mp4", _X264),
    "h264-mkv": Sample("H.264 in MKV, B-pyramid, 4 refs, open GOP", ("libx264",), ".mkv", _X264),
    "h264-us-mp4": Sample("H.264 in MP4, time base 1/1e6, 33/34 ms steps", ("libx264",), ".mp4", _X264, timing="us"),
    "h264-edit-mp4": Sample("H.264 in MP4, edit list cuts 2 frames", ("libx264",), ".mp4", _X264, timing="edit"),
    "h264-vfr-mkv": Sample("H.264 in MKV, variable frame rate", ("libx264",), ".mkv", _X264, timing="vfr"),
    "h264-ptsdts-mp4": Sample("H.264 in MP4, B-frames with pts = dts", ("libx264",), ".mp4", _X264, rewrite="pts-dts"),
    "hevc-mp4": Sample(
        "HEVC in MP4, open GOP, B-frames",
        ("libx265",),
        ".mp4",
        {"preset": "fast", "x265-params": "keyint={gop}:min-keyint={gop}:open-gop=1:bframes=3:log-level=error"},
    ),
    "vp9-webm": Sample("VP9 in WebM", ("libvpx-vp9",), ".webm", {"g": "{gop}", "cpu-used": "8", "crf": "30", "b": "0"}),
    "vp8-webm": Sample(
        "VP8 in WebM, hidden frames",
        ("libvpx",),
        ".webm",
        {"g": "{gop}", "cpu-used": "8", "crf": "30", "b": "1M"},
        rewrite="hidden",
    ),
    "av1-mkv": Sample(
        "AV1 in MKV",
        ("libsvtav1", "libaom-av1", "librav1e"),
        ".mkv",
        {"g": "{gop}", "preset": "12", "cpu-used": "8", "speed": "10"},
    ),
    "mpeg4-packed-avi": Sample(
        "MPEG-4 part 2 in AVI, packed B-frames, final N-VOP", ("mpeg4",), ".avi", _MPEG4, rewrite="packed"
    ),
    "mpeg4-nvop-avi": Sample(
        "MPEG-4 part 2 in AVI, N-VOP drop frames", ("mpeg4",), ".avi", {**_MPEG4, "bf": "0"}, rewrite="nvop"
    ),
    "mpeg2-ts": Sample("MPEG-2 in MPEG-TS (starts at 1.4 s)", ("mpeg2video",), ".ts", _MPEG4),
    "mjpeg-avi": Sample("MJPEG in AVI", ("mjpeg",), ".avi", {}, pix_fmt="yuvj420p"),
}


def encoder(name: str) -> str | None:
    """The encoder sample `name` uses in this FFmpeg build, or None."""
    return next((e for e in SAMPLES[name].encoders if e in av.codecs_available), None)


def moving_texture(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB uint8 (T, H, W, 3): blocky noise that moves 2 px right and 1 px down per frame (wrapping)."""
    rng = np.random.default_rng(seed)
    texture = np.kron(rng.integers(0, 256, (-(-height // 4), -(-width // 4), 3)), np.ones((4, 4, 1)))
    texture = texture[:height, :width].astype(np.uint8)
    return np.stack([np.roll(texture, (t, 2 * t), axis=(0, 1)) for t in range(frames)])


def write_samples(
    folder, frames: int = 60, width: int = 96, height: int = 64, gop: int = 12, names=None
) -> dict[str, Path]:
    """Write the samples `names` (default: all whose encoder exists) into `folder`: {name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video = moving_texture(frames, height, width)
    paths = {}
    for name in names or SAMPLES:
        if encoder(name) is None:
            continue
        paths[name] = folder / f"{name}{SAMPLES[name].suffix}"
        write_sample(paths[name], name, video, gop)
    return paths


def write_sample(path: Path, name: str, video: np.ndarray, gop: int) -> None:
    sample = SAMPLES[name]
    options = {k: v.replace("{gop}", str(gop)) for k, v in sample.options.items()}
    pts, time_base = _timestamps(sample.timing, len(video))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder(name), rate=RATE)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], sample.pix_fmt
        stream.codec_context.time_base = stream.time_base = time_base
        stream.options = options
        packets = []
        for rgb, stamp in zip(video, pts):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = int(stamp), time_base
            packets += stream.encode(frame)
        packets += stream.encode()
        if sample.rewrite:
            packets = [
                _packet(data, pts, dts, key, time_base)
                for data, pts, dts, key in _REWRITES[sample.rewrite](
                    [(bytes(p), p.pts, p.dts, p.is_keyframe) for p in packets], stream
                )
            ]
        for packet in packets:
            packet.stream = stream
            container.mux(packet)


def _packet(data: bytes, pts, dts, key: bool, time_base) -> av.Packet:
    packet = av.Packet(data)
    packet.pts, packet.dts, packet.time_base, packet.is_keyframe = pts, dts, time_base, key
    return packet


def _timestamps(timing: str, frames: int) -> tuple[np.ndarray, Fraction]:
    """pts (T,) and time base of each timing."""
    if timing == "us":  # phone and screen recorders: microseconds, rounded to whole milliseconds
        return np.round(np.arange(frames) * 1000 / RATE) * 1000, Fraction(1, 1_000_000)
    if timing == "edit":  # two frames before time 0: the MP4 muxer writes an edit list that cuts them
        return np.arange(-2, frames - 2), Fraction(1, RATE)
    if timing == "vfr":
        steps = np.random.default_rng(0).choice([20, 33, 34, 50, 100], frames - 1)
        return np.r_[0, np.cumsum(steps)], Fraction(1, 1000)
    return np.arange(frames), Fraction(1, RATE)


def _pts_as_dts(packets, stream):
    """B-frames whose pts is their decode time: display order is no longer the order of pts."""
    shift = -min(dts for *_, dts, _ in packets)
    return [(data, dts + shift, dts + shift, key) for data, _, dts, key in packets]


def _hidden(packets, stream, every: int = 7):
    """Every `every`-th VP8 inter frame hidden (show_frame 0, as alt-ref frames are): decoded, never shown."""
    return [
        (bytes([data[0] & ~0x10]) + data[1:] if i % every == every - 1 and not key else data, pts, dts, key)
        for i, (data, pts, dts, key) in enumerate(packets)
    ]


def _time_bits(packets, stream) -> int:
    """Bits of the MPEG-4 VOP time increment, from the VOL header in the extradata or the first packet."""
    bits = mpeg4_time_bits(stream.codec_context.extradata or b"") or mpeg4_time_bits(packets[0][0])
    if bits is None:
        raise ValueError("no MPEG-4 VOL header in the extradata or the first packet")
    return bits


def _n_vop(vop: bytes, time_bits: int) -> bytes:
    """A not-coded VOP (N-VOP) with the coding type and time of the VOP `vop`."""
    at = vop.find(b"\x00\x00\x01\xb6") + 4
    bits = "".join(f"{b:08b}" for b in vop[at : at + 12])
    end = bits.index("0", 2) + 2 + time_bits + 1  # modulo_time_base, marker, vop_time_increment, marker
    header = bits[:end] + "0"  # vop_coded = 0
    header += "0" + "1" * (-(len(header) + 1) % 8)  # stuffing to the byte boundary
    return vop[:at] + int(header, 2).to_bytes(len(header) // 8, "big")


def _chunks(payloads: list[tuple[bytes, bool]]) -> list[tuple]:
    """AVI packets: one per frame interval, pts = dts = its number."""
    return [(data, i, i, key) for i, (data, key) in enumerate(payloads)]


def _packed(packets, stream):
    """DivX-style packed B-frames: each anchor shares its packet with the first B-frame after it in
    decode order, the others move one packet up, and an N-VOP fills the gap; user data ending in 'p'
    marks the stream. One more N-VOP ends the stream: the AVI index counts it, nothing shows it."""
    bits = _time_bits(packets, stream)
    user_data = b"\x00\x00\x01\xb2DivX503b1393p"
    payloads, i = [], 0
    while i < len(packets):
        data, key = packets[i][0], packets[i][3]
        if key:
            at = data.find(b"\x00\x00\x01\xb6")
            data = data[:at] + user_data + data[at:]
        j = i + 1
        while j < len(packets) and mpeg4_vop(packets[j][0], bits)[0] == 2:  # B-VOPs
            j += 1
        run = [p[0] for p in packets[i + 1 : j]]
        if run:
            payloads += [(data + run[0], key), *((b, False) for b in run[1:]), (_n_vop(run[-1], bits), False)]
        else:
            payloads.append((data, key))
        i = j
    payloads.append((_n_vop(packets[-1][0], bits), False))  # a drop frame at the end: it shows nothing
    return _chunks(payloads)


def _with_n_vops(packets, stream, every: int = 7):
    """An N-VOP (a frame interval that repeats the previous frame) after every `every` VOPs: the AVI
    index counts them, the decoder shows nothing for them."""
    bits = _time_bits(packets, stream)
    payloads = []
    for i, (data, _, _, key) in enumerate(packets):
        payloads.append((data, key))
        if i % every == every - 1:
            payloads.append((_n_vop(data, bits), False))
    return _chunks(payloads)


_REWRITES = {"pts-dts": _pts_as_dts, "hidden": _hidden, "packed": _packed, "nvop": _with_n_vops}
