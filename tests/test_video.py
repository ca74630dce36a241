"""motionmae.io.video on real files: shipped H.264 videos and videos we encode ourselves."""

import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from motionmae.io.video import (
    B_FRAMES_WITHOUT_VECTORS,
    MOTION_VECTOR_CODECS,
    EmptyVideoError,
    FrameIndexError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    VideoNotFoundError,
    VideoReader,
    iter_frames,
    output_size,
    probe,
    read_frames,
    write_video,
)
from motionmae.io.video_samples import SAMPLES, encoder

from conftest import translating_square


def sequential_frames(path) -> np.ndarray:
    """Reference decode: every frame in display order, straight from PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def square_mpeg4(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpeg4") / "square.avi"
    write_video(path, translating_square(), codec="mpeg4", options={"bf": "0", "g": "12", "qscale": "3"})
    return path


@pytest.fixture(scope="module")
def square_mjpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("mjpeg") / "square.avi"
    write_video(path, translating_square(), codec="mjpeg", pix_fmt="yuvj420p")
    return path


def test_probe_shipped_videos(bikes, bigbuckbunny):
    info = probe(bikes)
    assert (info.num_frames, info.width, info.height, info.codec) == (250, 640, 272, "h264")
    assert info.fps == pytest.approx(25.0) and info.has_motion_vectors and not info.truncated
    info = probe(bigbuckbunny)
    assert (info.num_frames, info.width, info.height) == (132, 1280, 720)


@pytest.mark.parametrize("name", ["bikes", "bigbuckbunny", "square_h264", "square_mpeg4", "square_mjpeg"])
def test_random_access_equals_sequential_decode(name, request):
    path = request.getfixturevalue(name)
    reference = sequential_frames(path)
    n = len(reference)
    indices = [n - 1, 5, 5, 0, n // 2, 7, n - 2, 1]  # unsorted, repeated, both ends
    clip = read_frames(path, indices)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (len(indices), *reference.shape[1:])
    assert np.array_equal(clip.frames, reference[indices])


def video_path(name, request):
    """A sample of the codec matrix, or a shipped video; skips a sample this FFmpeg cannot encode."""
    if name in ("bikes", "bigbuckbunny"):
        return request.getfixturevalue(name)
    if encoder(name) is None:
        pytest.skip(f"this FFmpeg has none of the encoders {SAMPLES[name].encoders} ({SAMPLES[name].what})")
    return request.getfixturevalue("codec_matrix")[name]


def reference(path, motion: bool):
    """Frames (and vectors) of `VideoReader.sequential`, which must be PyAV's own decode from the start."""
    with VideoReader(path) as reader:
        frames, fields, flags = zip(*[rest for _, *rest in reader.sequential(motion=motion)])
    assert np.array_equal(np.stack(frames), sequential_frames(path))
    return np.stack(frames), (np.stack(fields) if motion else None), np.array(flags)


MATRIX = [*SAMPLES, "bikes", "bigbuckbunny"]


@pytest.mark.parametrize("motion", [False, True], ids=["pixels", "vectors"])
@pytest.mark.parametrize("name", MATRIX)
def test_every_index_reads_the_frame_of_a_sequential_decode(name, motion, request):
    """read([i]) is frame i of a sequential decode, for every i below the count (a dense sample on
    the long shipped files), and so is every frame of a read of many indices in any order (by a reader
    with one decoder thread, as in a data-loader worker)."""
    path = video_path(name, request)
    frames, fields, flags = reference(path, motion)
    n = len(frames)
    step = 1 if n <= 90 else 5 if name == "bikes" else 11
    with VideoReader(path) as reader:
        assert len(reader) == n
        for i in [*range(0, n, step), n - 1]:
            clip = reader.read([i], motion=motion)
            assert np.array_equal(clip.frames[0], frames[i]), f"frame {i}"
            if motion:
                assert clip.has_motion[0] == flags[i] and np.array_equal(clip.motion[0], fields[i]), f"vectors {i}"
    with VideoReader(path, threads=1) as reader:
        rng = np.random.default_rng(0)
        indices = np.r_[rng.permutation(n)[:24], rng.integers(0, n, 4), n - 1, 0]  # any order, repeats
        clip = reader.read(indices, motion=motion)
        assert np.array_equal(clip.frames, frames[indices])
        if motion:
            assert np.array_equal(clip.has_motion, flags[indices]) and np.array_equal(clip.motion, fields[indices])


def test_motion_switch_on_one_reader(codec_matrix):
    """One reader serves reads with and without vectors in turn (its decoder is reopened between)."""
    path = codec_matrix["h264-mp4"]
    frames, fields, flags = reference(path, motion=True)
    with VideoReader(path) as reader:
        for i, motion in [(30, True), (31, False), (5, True), (59, False), (17, True)]:
            clip = reader.read([i], motion=motion)
            assert np.array_equal(clip.frames[0], frames[i])
            if motion:
                assert clip.has_motion[0] == flags[i] and np.array_equal(clip.motion[0], fields[i])


@pytest.mark.parametrize("name", SAMPLES)
def test_count_is_what_decodes(name, request):
    """probe() counts the frames that decode, whatever the container claims; none of these files is damaged."""
    path = video_path(name, request)
    info = probe(path)
    assert info.num_frames == len(sequential_frames(path)) and not info.truncated
    # packets that show no frame: an edit list's 2 cut frames, 8 N-VOPs, a final N-VOP after packed
    # B-frames, 7 VP8 hidden frames (WebM states no count)
    shows_less = {
        "h264-edit-mp4": (60, 58),
        "mpeg4-nvop-avi": (68, 60),
        "mpeg4-packed-avi": (61, 60),
        "vp8-webm": (0, 53),
    }
    assert (info.container_frames, info.num_frames) == shows_less.get(name, (info.container_frames, 60))
    assert info.container_frames in (0, 60) or name in shows_less  # 0: MKV, WebM and TS state no count


@pytest.mark.parametrize("name", SAMPLES)
def test_vectors_per_codec(name, request):
    """H.264 and MPEG-2 give vectors on every P- and B-frame, MPEG-4 part 2 on every P-frame (its
    B-frames export zeros for direct-mode blocks), and they move; HEVC, VP9, AV1 and MJPEG give none:
    has_motion is False on every frame, never a zero field flagged True."""
    path = video_path(name, request)
    _, fields, flags = reference(path, motion=True)
    with av.open(str(path)) as container:
        kinds = np.array([int(f.pict_type) for f in container.decode(video=0)])  # 1 = I, 2 = P, 3 = B
    info = probe(path)
    assert info.has_motion_vectors == (name.split("-")[0] in ("h264", "mpeg2", "mpeg4"))
    assert info.has_motion_vectors == (info.codec in MOTION_VECTOR_CODECS)
    if info.has_motion_vectors:
        carrying = (kinds == 2) if info.codec in B_FRAMES_WITHOUT_VECTORS else (kinds != 1)
        assert np.array_equal(flags, carrying) and carrying.sum() >= 12
        assert all(np.abs(fields[t]).max() > 0.5 for t in np.flatnonzero(flags))
    else:
        assert not flags.any() and not fields.any()


def test_a_rewritten_file_is_probed_again(tmp_path):
    """Probe results are kept per process, by path, size and modification time."""
    path = tmp_path / "clip.mp4"
    write_video(path, translating_square(frames=36))
    assert probe(path).num_frames == 36
    write_video(path, translating_square(frames=20))
    assert probe(path).num_frames == 20
    with VideoReader(path) as reader:
        assert len(reader) == 20 and np.array_equal(reader.read([19]).frames[0], sequential_frames(path)[19])


def test_short_span_does_not_decode_the_whole_file(bikes):
    reference = sequential_frames(bikes)
    with VideoReader(bikes) as reader:
        clip = reader.read(np.arange(200, 264, 4)[:16] - 40)  # 16 frames at stride 4 near the end
        assert np.array_equal(clip.frames, reference[np.arange(160, 224, 4)])
        assert reader.frames_decoded < 250 // 2


def object_cells(field: np.ndarray, x0: int, y0: int, size: int = 16) -> np.ndarray:
    """Vectors of the 8x8 cells that lie fully inside a size x size object at (x0, y0)."""
    c0, c1 = -(-x0 // 8), (x0 + size) // 8
    r0, r1 = -(-y0 // 8), (y0 + size) // 8
    return field[r0:r1, c0:c1].reshape(-1, 2)


@pytest.mark.parametrize("name", ["square_h264", "square_mpeg4"])
def test_vectors_follow_translating_square(name, request):
    path = request.getfixturevalue(name)
    with av.open(str(path)) as container:
        kinds = [int(f.pict_type) for f in container.decode(video=0)]  # 1 = I, 2 = P, 3 = B
    clip = read_frames(path, np.arange(len(kinds)), motion=True)
    assert clip.motion.shape == (len(kinds), 8, 12, 2) and clip.motion.dtype == np.float32
    assert clip.has_motion.tolist() == [k != 1 for k in kinds]
    assert not clip.motion[~clip.has_motion].any()
    p_frames = [t for t, k in enumerate(kinds) if k == 2]
    assert p_frames
    for t in p_frames:  # the square moves +2 px/frame in x, 0 in y
        dx, dy = np.median(object_cells(clip.motion[t], 10 + 2 * t, 20), axis=0)
        assert abs(dx - 2) <= 1 and abs(dy) <= 1, (t, dx, dy)


def test_resize_scales_frames_and_vectors(square_h264):
    full = read_frames(square_h264, np.arange(36), motion=True)
    small = read_frames(square_h264, np.arange(36), short_side=32, motion=True)
    assert output_size(96, 64, 32) == (48, 32)
    assert small.frames.shape == (36, 32, 48, 3) and small.motion.shape == (36, 4, 6, 2)
    assert np.array_equal(small.has_motion, full.has_motion)

    def moving_dx(clip):  # median x-displacement of the cells that move
        vectors = clip.motion[clip.has_motion].reshape(-1, 2)
        return np.median(vectors[np.linalg.norm(vectors, axis=1) > 0.1, 0])

    assert moving_dx(full) == pytest.approx(2.0, abs=0.25)
    assert moving_dx(small) == pytest.approx(1.0, abs=0.25)


def exact_rgb(frame, width: int, height: int) -> np.ndarray:
    """float64 (H, W, 3): a yuv420p frame converted exactly (bilinear chroma, BT.601 limited range) and
    area-averaged to width x height."""
    h, w = frame.height, frame.width
    planes = frame.to_ndarray(format="yuv420p")
    y = planes[:h].astype(np.float64) - 16
    u, v = (
        cv2.resize(p.reshape(h // 2, w // 2).astype(np.float64), (w, h)) - 128 for p in np.split(planes[h:].ravel(), 2)
    )
    rgb = np.stack(
        [1.164383 * y + 1.596027 * v, 1.164383 * y - 0.391762 * u - 0.812968 * v, 1.164383 * y + 2.017232 * u], axis=-1
    )
    return cv2.resize(np.clip(rgb, 0, 255), (width, height), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("name", ["bikes", "bigbuckbunny"])
def test_resized_frames_are_as_close_to_exact_as_pyavs_rgb(name, request):
    """Resized RGB frames (swscale's BGR output, channels swapped) stay within 5 levels of PyAV's own
    resized RGB conversion and are no farther than it from an exact conversion."""
    path = request.getfixturevalue(name)
    with av.open(str(path)) as container:
        frames = [f for _, f in zip(range(20), container.decode(video=0))][::9]
    with VideoReader(path, short_side=128) as reader:
        ours = reader.read([0, 9, 18]).frames
    for frame, mine in zip(frames, ours):
        height, width = mine.shape[:2]
        pyav = frame.to_ndarray(format="rgb24", width=width, height=height).astype(np.float64)
        exact = exact_rgb(frame, width, height)
        assert np.abs(mine - pyav).max() <= 5
        assert np.abs(mine - exact).mean() <= np.abs(pyav - exact).mean() + 0.05


def test_mjpeg_has_no_vectors(square_mjpeg):
    info = probe(square_mjpeg)
    assert info.codec == "mjpeg" and not info.has_motion_vectors
    clip = read_frames(square_mjpeg, [0, 10, 20], motion=True)
    assert not clip.has_motion.any()


def test_errors_name_the_file(tmp_path, square_h264):
    cases = []
    cases.append((tmp_path / "missing.mp4", VideoNotFoundError))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cases.append((empty, EmptyVideoError))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    cases.append((text, NotAVideoError))
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    cases.append((audio, NoVideoStreamError))
    for path, error in cases:
        with pytest.raises(error) as caught:
            probe(path)
        assert isinstance(caught.value, VideoError) and str(path) in str(caught.value)
    with pytest.raises(FrameIndexError, match="out of range"):
        read_frames(square_h264, [0, 36])
    with pytest.raises(FrameIndexError):
        read_frames(square_h264, [-1])


def test_truncated_file_yields_frames_before_damage(tmp_path):
    whole = tmp_path / "whole.mkv"
    frames = translating_square()
    write_video(whole, frames)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    info = probe(cut)
    assert info.truncated and 0 < info.num_frames < 36
    clip = read_frames(cut, np.arange(info.num_frames), motion=True)
    assert np.array_equal(clip.frames, sequential_frames(cut)[: info.num_frames])
    # Frames before the damage are the original ones; at the cut, B-frames whose
    # packets were lost are missing, so only the frames before that are compared.
    intact = info.num_frames - 2
    assert np.array_equal(clip.frames[:intact], sequential_frames(whole)[:intact])
    with pytest.raises(FrameIndexError):
        read_frames(cut, [35])


def test_info_command_reports_bad_files_and_continues(tmp_path, bikes, square_mjpeg):
    bad = tmp_path / "broken.mp4"
    bad.write_text("garbage")
    result = subprocess.run(
        [sys.executable, "-m", "motionmae", "info", str(bikes), str(bad), str(square_mjpeg)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    with av.open(str(bikes)) as container:
        kinds = [int(f.pict_type) for f in container.decode(video=0)]
    coverage = sum(k != 1 for k in kinds) / len(kinds)  # every frame but the I-frames
    assert "250 frames" in lines[0] and f"frames with vectors {coverage:.1%}" in lines[0]
    assert lines[1].startswith("ERROR") and str(bad) in lines[1]
    assert "motion vectors no" in lines[2] and "frames with vectors 0.0%" in lines[2]
    assert "Traceback" not in result.stderr


def test_info_command_says_when_the_container_claims_otherwise(codec_matrix):
    paths = [str(codec_matrix[name]) for name in ("mpeg4-nvop-avi", "h264-mp4")]
    result = subprocess.run([sys.executable, "-m", "motionmae", "info", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    nvop, plain = result.stdout.strip().splitlines()
    assert ": 60 frames" in nvop and "(the container claims 68)" in nvop and "TRUNCATED" not in nvop
    assert ": 60 frames" in plain and "claims" not in plain


def test_sequential_decode_is_one_pass(bigbuckbunny):
    reference = sequential_frames(bigbuckbunny)  # one keyframe in 132 frames: re-seeking would be quadratic
    with VideoReader(bigbuckbunny, short_side=None) as reader:
        frames = np.stack([pixels for _, pixels, _, _ in reader.sequential()])
        assert reader.frames_decoded == len(reference)
    assert np.array_equal(frames, reference)
    chunks = list(iter_frames(bigbuckbunny, chunk=50, motion=True))
    assert [len(c.indices) for c in chunks] == [50, 50, 32]
    assert np.array_equal(np.concatenate([c.indices for c in chunks]), np.arange(132))
