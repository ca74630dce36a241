"""The embedded data set: classes need motion, truth matches pixels, files are deterministic and resumable."""

import json
import os
import signal
import subprocess
import sys
import time

import av
import cv2
import numpy as np
import pytest

from motionmae.cli.main import main
from motionmae.data import synthetic
from motionmae.data.synthetic import CLASSES, REVERSED, make_dataset, motion_class, render_video, reverse_truth
from motionmae.io.video import probe, read_frames

SMALL = dict(videos_per_class=3, size=64, frames=16, fps=25, seed=3, camera_motion="mixed")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A small written data set (36 videos, 64 px x 16 frames, mixed camera), two workers."""
    return make_dataset(tmp_path_factory.mktemp("synthetic") / "ref", workers=2, progress=False, **SMALL)


def decoded(out, line):
    path = out / line.split()[0]
    return read_frames(path, np.arange(probe(path).num_frames)).frames


# ---------------------------------------------------------------- classes are motion


def test_classes_come_in_reversed_pairs():
    assert len(CLASSES) >= 12 and len(set(CLASSES)) == len(CLASSES)
    assert all(REVERSED[REVERSED[c]] == c != REVERSED[c] for c in CLASSES)


@pytest.mark.parametrize("camera", ["none", "pan", "zoom"])
def test_truth_shows_the_class_and_backwards_its_partner(camera):
    for label, name in enumerate(CLASSES):
        for index in range(3):
            _, truth = render_video(label, index, size=48, frames=24, seed=1, camera_motion=camera)
            assert motion_class(truth) == name
            assert motion_class(reverse_truth(truth)) == REVERSED[name], (name, index)


def appearance_features(frame):
    """Single-frame statistics: colour moments and histograms, a 4x4 brightness layout, edge energy."""
    rgb = frame.astype(np.float32) / 255
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.float32) / 255
    luma = rgb.mean(-1)
    side = luma.shape[0] // 4
    layout = luma[: side * 4, : side * 4].reshape(4, side, 4, side).mean((1, 3)).ravel()
    channels = [rgb[..., 0], rgb[..., 1], rgb[..., 2], hsv[..., 1], hsv[..., 2]]
    histograms = [np.histogram(c, bins=8, range=(0, 1))[0] / c.size for c in channels]
    gy, gx = np.gradient(luma)
    return np.concatenate(
        [rgb.mean((0, 1)), rgb.std((0, 1)), layout, *histograms, [np.hypot(gx, gy).mean(), (hsv[..., 1] > 0.5).mean()]]
    )


def displacement_features(pose):
    """Per quarter of the clip: the primary's displacement, speed, size and angle change; object 1's
    displacement and speed; the change of their distance. Scene coordinates from the ground truth."""
    cut = np.linspace(0, len(pose) - 1, 5).round().astype(int)
    gap = np.linalg.norm(pose[:, 0, :2] - pose[:, 1, :2], axis=1)
    features = []
    for a, b in zip(cut[:-1], cut[1:]):
        primary, other = pose[b, 0, :2] - pose[a, 0, :2], pose[b, 1, :2] - pose[a, 1, :2]
        features += [
            *primary,
            np.linalg.norm(primary),
            np.log(pose[b, 0, 3] / pose[a, 0, 3]),
            pose[b, 0, 2] - pose[a, 0, 2],
            *other,
            np.linalg.norm(other),
            gap[b] - gap[a],
        ]
    return np.array(features)


def linear_accuracy(train_x, train_y, val_x, val_y, ridge=1e-2):
    """One-vs-rest ridge least squares on standardized features; accuracy on val."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    a = np.c_[(train_x - mean) / std, np.ones(len(train_x))]
    b = np.c_[(val_x - mean) / std, np.ones(len(val_x))]
    targets = 2 * np.eye(len(CLASSES))[train_y] - 1
    weights = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ targets)
    return float(((b @ weights).argmax(1) == val_y).mean())


@pytest.mark.parametrize("frame", ["middle", "random"])
def test_appearance_is_chance_and_motion_is_enough(frame):
    """A classifier on one frame (the middle one, where the layout is drawn alike for every class, or
    one at random) stays within 5 points of chance; on the objects' displacements it is right."""
    per_class, train_per_class, size, frames = 100, 75, 32, 24
    rng = np.random.default_rng(0)
    appearance, motion, labels = [], [], []
    for label in range(len(CLASSES)):
        for index in range(per_class):
            scene = synthetic.sample_scene(label, index, size, frames, seed=0, camera_motion="mixed")
            time = (frames - 1) // 2 if frame == "middle" else int(rng.integers(frames))
            image, _ = synthetic.render(scene, times=[time])
            appearance.append(appearance_features(image[0]))
            motion.append(displacement_features(scene.pose.astype(np.float64)))
            labels.append(label)
    appearance, motion, labels = np.array(appearance), np.array(motion), np.array(labels)
    train = np.arange(len(labels)) % per_class < train_per_class
    chance = 1 / len(CLASSES)
    by_appearance = linear_accuracy(appearance[train], labels[train], appearance[~train], labels[~train])
    by_motion = linear_accuracy(motion[train], labels[train], motion[~train], labels[~train])
    assert by_appearance <= chance + 0.05, by_appearance
    assert by_motion >= 0.90, by_motion


def test_render_of_chosen_frames_matches_the_full_video():
    video, truth = render_video("grow", 4, size=48, frames=20, seed=2)
    scene = synthetic.sample_scene(CLASSES.index("grow"), 4, 48, 20, seed=2)
    some, mask = synthetic.render(scene, times=[0, 9, 19])
    np.testing.assert_array_equal(some, video[[0, 9, 19]])
    np.testing.assert_array_equal(mask, truth["mask"][[0, 9, 19]])


# ---------------------------------------------------------------- truth matches the pixels


@pytest.mark.parametrize(
    "name,camera", [("move_right", "none"), ("rotate_clockwise", "pan"), ("shrink", "zoom"), ("approach", "none")]
)
def test_true_flow_carries_each_frame_onto_the_next(name, camera):
    """Warping frame t+1 back with the true flow matches frame t inside the (moving) objects."""
    label = CLASSES.index(name)
    scene = synthetic.sample_scene(label, 0, 64, 12, seed=5, camera_motion=camera)
    frames, mask = synthetic.render(scene, noise=False)
    _, truth = render_video(label, 0, 64, 12, seed=5, camera_motion=camera)
    np.testing.assert_array_equal(mask, truth["mask"])
    flow = synthetic.true_flow(truth)
    assert flow.shape == (11, 64, 64, 2)
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    warped_error, still_error = [], []
    for t in range(11):
        # inside every object (not its edge), where the same object is seen at the flow's destination
        interior = np.any(
            [cv2.erode((mask[t] == k).astype(np.uint8), np.ones((3, 3))) > 0 for k in range(1, mask.max() + 1)], axis=0
        )
        to_x, to_y = np.rint(xs + flow[t, ..., 0]).astype(int), np.rint(ys + flow[t, ..., 1]).astype(int)
        inside = (to_x >= 0) & (to_x < 64) & (to_y >= 0) & (to_y < 64)
        interior &= inside & (mask[t + 1][to_y.clip(0, 63), to_x.clip(0, 63)] == mask[t])
        nxt = frames[t + 1].astype(np.float32)
        warped = cv2.remap(nxt, xs + flow[t, ..., 0], ys + flow[t, ..., 1], cv2.INTER_LINEAR)
        warped_error.append(np.abs(warped - frames[t])[interior].mean())
        still_error.append(np.abs(nxt - frames[t])[interior].mean())
    assert np.mean(warped_error) < 0.4 * np.mean(still_error), (warped_error, still_error)


def test_truth_centre_box_and_mask_agree():
    _, truth = render_video("move_then_stop", 2, size=64, frames=32, seed=0, camera_motion="pan")
    x0, y0, x1, y1 = truth["box"].T
    cx, cy = truth["center"].T
    radius = truth["pose"][:, 0, 3]
    whole = (cx - radius > 1) & (cx + radius < 63) & (cy - radius > 1) & (cy + radius < 63)  # entirely in frame
    assert whole.sum() >= 16
    assert ((x0 <= cx) & (cx <= x1) & (y0 <= cy) & (cy <= y1))[whole].all()
    assert ((truth["mask"] == 1).sum((1, 2))[whole] > 20).all()
    assert np.isnan(truth["box"][~(truth["mask"] == 1).any((1, 2))]).all()  # no pixel visible: no box
    np.testing.assert_allclose(truth["camera"][15], [[1, 0, 0], [0, 1, 0]], atol=0.05)  # middle of 32 frames
    moved = np.linalg.norm(np.diff(truth["pose"][:, :, :2], axis=0), axis=-1)  # (T-1, N): every object
    assert moved[:15].min() > 0.2 and moved[16:].max() < 1e-4  # moves, then stops


def test_every_object_performs_the_class_motion():
    for name in ["move_left", "rotate_clockwise", "grow", "approach"]:
        for index in range(5):
            scene = synthetic.sample_scene(CLASSES.index(name), index, 48, 24, seed=0)
            pose = scene.pose.astype(np.float64)
            assert pose.shape[1] >= 2
            if name == "move_left":
                assert (pose[-1, :, 0] - pose[0, :, 0] < -0.3 * 48).all()
            elif name == "rotate_clockwise":
                assert (pose[-1, :, 2] - pose[0, :, 2] > np.pi * 0.9).all()
            elif name == "grow":
                assert (pose[-1, :, 3] / pose[0, :, 3] > 1.7).all()
            else:
                gap = [np.linalg.norm(p[:, None, :2] - p[None, :, :2], axis=-1) for p in (pose[0], pose[-1])]
                off = ~np.eye(pose.shape[1], dtype=bool)
                assert (gap[1][off] < gap[0][off]).all()


# ---------------------------------------------------------------- files on disk


def test_written_dataset_layout_and_videos(reference):
    meta = json.loads((reference / "meta.json").read_text())
    assert meta["arguments"] == SMALL and meta["version"] == synthetic.GENERATOR_VERSION
    assert (reference / "classes.txt").read_text().split() == CLASSES
    train = (reference / "train.csv").read_text().splitlines()
    val = (reference / "val.csv").read_text().splitlines()
    assert len(train) == 24 and len(val) == 12  # the last of 3 per class is val
    assert all(line.split()[0].endswith("_00002.mp4") for line in val)
    for line in train:
        rel, label = line.split(" ")
        assert rel.startswith(f"videos/{CLASSES[int(label)]}/") and (reference / rel).is_file()
        assert (reference / rel).with_suffix(".npz").is_file()
    info = probe(reference / train[0].split()[0])
    assert (info.num_frames, info.width, info.height, info.codec, info.fps) == (16, 64, 64, "h264", 25.0)
    with av.open(str(reference / train[0].split()[0])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        kinds = {int(frame.pict_type) for frame in container.decode(stream)}
    assert {1, 2, 3} <= kinds  # I, P and B frames


def test_written_video_matches_render_and_codec_vectors_follow_truth(reference):
    for name, sign in [("move_right", 1), ("move_left", -1)]:
        label = CLASSES.index(name)
        path = reference / synthetic.video_name(label, 0)
        clip = read_frames(path, np.arange(16), motion=True)
        rendered, truth = render_video(label, 0, **{k: SMALL[k] for k in ("size", "frames", "seed", "camera_motion")})
        stored = np.load(path.with_suffix(".npz"))
        for key in ("pose", "mask", "camera", "center"):
            np.testing.assert_array_equal(stored[key], truth[key])
        mse = np.mean((clip.frames.astype(np.float64) - rendered) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30  # H.264 at crf 18 stays close to the render
        # Codec vectors of small objects are coarse: check the direction of the object's
        # motion relative to the background's (which removes any camera motion).
        flow = synthetic.true_flow(truth).reshape(15, 8, 8, 8, 8, 2).mean((2, 4))
        share = (truth["mask"][1:] == 1).reshape(15, 8, 8, 8, 8).mean((2, 4))
        background = (truth["mask"][1:] == 0).reshape(15, 8, 8, 8, 8).mean((2, 4)) == 1
        primary = (share > 0.3) & clip.has_motion[1:, None, None]
        background &= clip.has_motion[1:, None, None]
        coded = clip.motion[1:][primary].mean(0) - clip.motion[1:][background].mean(0)
        true = flow[primary].mean(0) - flow[background].mean(0)
        assert sign * true[0] > 0.2 and sign * coded[0] > 0.2, (name, coded, true)


def test_same_arguments_give_identical_data(reference, tmp_path):
    again = make_dataset(tmp_path / "again", workers=1, progress=False, **SMALL)
    for name in ("train.csv", "val.csv", "classes.txt", "meta.json"):
        assert (again / name).read_bytes() == (reference / name).read_bytes()
    for line in (reference / "train.csv").read_text().splitlines()[::5]:
        np.testing.assert_array_equal(decoded(again, line), decoded(reference, line))


def test_resume_after_damage_restores_the_same_data(reference, tmp_path):
    import shutil

    out = shutil.copytree(reference, tmp_path / "copy")
    lines = (out / "train.csv").read_text().splitlines()
    first, second = (out / lines[0].split()[0]), (out / lines[7].split()[0])
    first.with_suffix(".npz").unlink()  # video written, truth not yet: unfinished
    second.with_suffix(".npz").unlink()
    second.write_bytes(second.read_bytes()[:300])  # and a half-written file from an old writer
    leftover = first.with_name(".x.1234.tmp.mp4")
    leftover.write_bytes(b"partial")
    for name in ("train.csv", "val.csv", "classes.txt"):
        (out / name).unlink()
    make_dataset(out, workers=1, progress=False, **SMALL)
    assert not leftover.exists()
    assert (out / "train.csv").read_bytes() == (reference / "train.csv").read_bytes()
    for line in (lines[0], lines[7]):
        np.testing.assert_array_equal(decoded(out, line), decoded(reference, line))


@pytest.mark.slow  # a subprocess killed mid-run
def test_killed_run_lists_nothing_half_written_and_resumes(tmp_path):
    out = tmp_path / "killed"
    script = (
        "from motionmae.data.synthetic import make_dataset; "
        f"make_dataset({str(out)!r}, videos_per_class=20, size=64, frames=48, workers=1, progress=False)"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while len(list(out.glob("videos/*/*.npz"))) < 5 and time.time() < deadline and child.poll() is None:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = len(list(out.glob("videos/*/*.npz")))
    assert 5 <= finished < 240 and not (out / "train.csv").exists()
    make_dataset(out, videos_per_class=20, size=64, frames=48, workers=2, progress=False)
    lines = (out / "train.csv").read_text().splitlines() + (out / "val.csv").read_text().splitlines()
    assert len(lines) == 240
    assert all(probe(out / line.split()[0]).num_frames == 48 for line in lines)
    assert not list(out.glob("videos/*/.*"))


# ---------------------------------------------------------------- command line


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(["make-synthetic", str(out), "--videos-per-class", "1", "--size", "32", "--frames", "8", "--workers", "1"])
        == 0
    )
    assert "12 videos" in capsys.readouterr().out
    assert len((out / "train.csv").read_text().splitlines()) == 12


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--size", "16"], "too small for the shapes"),
        (["--size", "33"], "must be even"),
        (["--videos-per-class", "0"], "at least 1"),
        (["--frames", "3"], "too few"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_cli_bad_arguments_give_one_line(tmp_path, capsys, extra, message):
    assert main(["make-synthetic", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_refuses_bad_out(reference, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    foreign = tmp_path / "my_videos"
    foreign.mkdir()
    (foreign / "clip.mp4").write_bytes(b"")
    cases = [
        ([str(blocker / "out")], "cannot write to OUT"),
        ([str(blocker)], "is a file"),
        ([str(foreign)], "holds no motionmae synthetic data set"),
        (
            [
                str(reference),
                "--videos-per-class",
                "3",
                "--size",
                "64",
                "--frames",
                "16",
                "--seed",
                "4",
                "--camera-motion",
                "mixed",
            ],
            "holds a different data set (seed=3 there, 4 asked)",
        ),
    ]
    for argv, message in cases:
        assert main(["make-synthetic", *argv, "--workers", "1"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
