"""`motionmae visualize`: a tiny pretrained checkpoint drawn on synthetic videos whose motion is known."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from motionmae.cli.main import main
from motionmae.config import load_config
from motionmae.data.synthetic import render_video
from motionmae.evaluation.visualize import visualize_checkpoint
from motionmae.figures.charts import PALETTE, bar_chart
from motionmae.figures.overlays import panel_scale
from motionmae.io.video import write_video
from motionmae.train.pretrain import pretrain

FRAMES, STRIDE, TUBELET, SIZE = 8, 2, 2, 64  # the clip the checkpoints are trained on


def train(tiny_synthetic, out, *extra):
    data, cache = tiny_synthetic
    torch.set_num_threads(1)
    config = load_config("demo", [f"data.train={data / 'train.csv'}", f"data.cache={cache}", f"run.out={out}",
                                  f"data.frames={FRAMES}", f"data.stride={STRIDE}", "data.workers=0",
                                  f"data.short_side={SIZE}", f"data.size={SIZE}", "model.patch=16",
                                  "optim.batch_size=4", "optim.base_lr=1e-3", "run.max_steps=4", *extra])
    return pretrain(config).checkpoint


@pytest.fixture(scope="module")
def traj_checkpoint(tiny_synthetic, tmp_path_factory):
    return train(tiny_synthetic, tmp_path_factory.mktemp("traj"))


@pytest.fixture(scope="module")
def pixel_checkpoint(tiny_synthetic, tmp_path_factory):
    return train(tiny_synthetic, tmp_path_factory.mktemp("pixel"), "target.name=pixel", "target.options=null")


def figure_shape(rows: int, columns: int) -> tuple[int, int, int]:
    """Title strip 28 px; per row a 22 px caption over the panels; 4 px gaps."""
    panel = SIZE * panel_scale(SIZE)
    return 28 + rows * (22 + panel) + (rows - 1) * 4, columns * panel + (columns - 1) * 4, 3


@pytest.mark.parametrize("name", ["move_right", "move_left", "move_up", "move_down"])
def test_true_trajectories_follow_the_object(traj_checkpoint, tiny_synthetic, tmp_path, name):
    video = tiny_synthetic[0] / "videos" / name / f"{name}_00000.mp4"
    truth = np.load(video.with_suffix(".npz"))
    out = tmp_path / "traj.png"
    result = visualize_checkpoint(traj_checkpoint, video, out, mask_ratio=0.9)

    written = cv2.imread(str(out))
    assert written.shape == result.image.shape == figure_shape(FRAMES // TUBELET, 4)
    assert (result.box.x, result.box.y, result.box.w, result.box.size) == (0, 0, SIZE, SIZE)  # crop px = video px
    slices, tokens, k, points, _ = result.truth.shape
    assert (slices, tokens, k) == (FRAMES // TUBELET, (SIZE // 16) ** 2, 4) and result.mask.mean() > 0.85
    assert np.isfinite(result.predicted).all() and result.predicted.shape == result.truth.shape

    # The drawn trajectories (masked tokens, in the frame) that start on the moving object move like it.
    steps, moved, expected = points - 1, [], []
    for j in range(slices):
        frame = result.start + j * TUBELET * STRIDE
        drawn = result.truth[j][result.mask[j].reshape(-1, 1) & result.valid[j]]  # (P, L+1, 2)
        x, y = np.round(drawn[:, 0]).astype(int).T
        on_object = truth["mask"][frame][y, x] == 1
        moved += list(drawn[on_object, -1] - drawn[on_object, 0])
        expected.append(truth["center"][frame + steps] - truth["center"][frame])
    assert moved, "no drawn trajectory starts on the object"
    moved, expected = np.mean(moved, axis=0), np.mean(expected, axis=0)
    axis = int(np.argmax(np.abs(expected)))  # 0: x for left / right, 1: y for up / down
    assert np.sign(moved[axis]) == np.sign(expected[axis])
    assert abs(moved[axis]) > 0.3 * abs(expected[axis]) and abs(moved[axis]) > abs(moved[1 - axis])


def test_pixel_checkpoint_draws_a_reconstruction(pixel_checkpoint, tiny_synthetic, tmp_path, capsys):
    video = tiny_synthetic[0] / "videos" / "grow" / "grow_00000.mp4"
    out = tmp_path / "rec.png"
    assert main(["visualize", str(pixel_checkpoint), str(video), "--out", str(out), "--rows", "2"]) == 0
    assert "pixel target" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == figure_shape(2, 3)

    result = visualize_checkpoint(pixel_checkpoint, video, seed=1)
    inputs = result.frames[0:(FRAMES - 1) * STRIDE + 1:STRIDE]
    pixels = np.kron(result.mask, np.ones((1, 16, 16), bool)).repeat(TUBELET, axis=0)  # (T, S, S)
    assert result.image.shape == figure_shape(4, 3) and result.truth is None
    assert np.array_equal(result.reconstruction[~pixels], inputs[~pixels])  # visible tokens kept
    assert np.abs(result.reconstruction[pixels].astype(int) - inputs[pixels]).mean() > 1  # masked ones predicted


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "motionmae", "visualize", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_bad_inputs_give_one_line_errors(traj_checkpoint, tiny_synthetic, tmp_path):
    video = tiny_synthetic[0] / "videos" / "move_up" / "move_up_00000.mp4"
    short = tmp_path / "short.mp4"
    write_video(short, render_video("move_up", 0, size=SIZE, frames=12)[0])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    cases = [  # exit code 1: a file that fails; 2: an argument that does not fit
        ((tmp_path / "missing.pt", video), 1, "no such checkpoint"),
        ((traj_checkpoint, text), 1, "not a readable video"),
        ((traj_checkpoint, short), 2, "has 12 frames; a clip of 8 frames at stride 2 with its traj target needs 17"),
        ((traj_checkpoint, video, "--start", 9), 2, "start 9 out of range"),
        ((traj_checkpoint, video, "--mask-ratio", 1.5), 2, "--mask-ratio 1.5"),
    ]
    for args, code, message in cases:
        result = run_cli(*args, "--out", tmp_path / "x.png")
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("motionmae visualize: error:") and message in result.stderr, result.stderr
    assert not (tmp_path / "x.png").exists()


def test_bar_chart_draws_each_bar_to_its_height_with_whiskers():
    image = bar_chart({"a": {"probe": (40.0, 5.0), "fine-tune": (20.0, None)}, "b": {"probe": (10.0, None)}},
                      "title", line=("chance", 8.3))
    assert image.dtype == np.uint8 and image.shape == (460, 480, 3)
    plot = image[60:]  # below the title and legend
    heights = [(plot == color).all(-1).sum(0) for color in PALETTE[:2]]  # per column, probe and fine-tune
    tallest = [int(h.max()) for h in heights]
    assert abs(tallest[0] / tallest[1] - 2.0) < 0.05  # 40 vs 20
    probe_bars = sorted({int(h) for h in heights[0] if h})
    assert abs(probe_bars[-1] / probe_bars[0] - 4.0) < 0.2  # a: 40, b: 10
    black = (plot == 0).all(-1).sum(0)
    bar_a = np.nonzero(heights[0] > tallest[0] / 2)[0]
    assert black[bar_a].max() - black[bar_a[0]] > 0.2 * tallest[0]  # the +-5 whisker down its middle
