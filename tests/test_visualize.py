"""`motionmae visualize`: a tiny pretrained checkpoint drawn on synthetic videos whose motion is known."""

import json
import subprocess
import sys

import cv2
import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.transforms import Bbox

from motionmae.cli.main import main
from motionmae.config import load_config
from motionmae.data.synthetic import render_video
from motionmae.evaluation.visualize import visualize_checkpoint
from motionmae.figures.charts import bar_chart, confusion_figure, metrics_figure, save_figure
from motionmae.figures.overlays import panel_scale
from motionmae.io.video import write_video
from motionmae.train.pretrain import pretrain

FRAMES, STRIDE, TUBELET, SIZE = 8, 2, 2, 64  # the clip the checkpoints are trained on


def train(tiny_synthetic, out, *extra):
    data, cache = tiny_synthetic
    torch.set_num_threads(1)
    config = load_config(
        "demo",
        [
            f"data.train={data / 'train.csv'}",
            f"data.cache={cache}",
            f"run.out={out}",
            f"data.frames={FRAMES}",
            f"data.stride={STRIDE}",
            "data.workers=0",
            f"data.short_side={SIZE}",
            f"data.size={SIZE}",
            "model.patch=16",
            "optim.batch_size=4",
            "optim.base_lr=1e-3",
            "run.max_steps=4",
            *extra,
        ],
    )
    return pretrain(config).checkpoint


@pytest.fixture(scope="module")
def traj_checkpoint(tiny_synthetic, tmp_path_factory):
    return train(tiny_synthetic, tmp_path_factory.mktemp("traj"), "run.log_every=1")


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
    inputs = result.frames[0 : (FRAMES - 1) * STRIDE + 1 : STRIDE]
    pixels = np.kron(result.mask, np.ones((1, 16, 16), bool)).repeat(TUBELET, axis=0)  # (T, S, S)
    assert result.image.shape == figure_shape(4, 3) and result.truth is None
    assert np.array_equal(result.reconstruction[~pixels], inputs[~pixels])  # visible tokens kept
    assert np.abs(result.reconstruction[pixels].astype(int) - inputs[pixels]).mean() > 1  # masked ones predicted


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "motionmae", "visualize", *map(str, args)], capture_output=True, text=True, timeout=120
    )


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


def test_training_curves_of_a_real_run(traj_checkpoint, tmp_path):
    metrics = traj_checkpoint.parent / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert any("loss" not in r for r in records)  # the run also logged the videos it read
    records = [r for r in records if "loss" in r]
    steps = [r["step"] for r in records]
    assert steps == [1, 2, 3, 4]

    figure = metrics_figure(metrics)
    losses, lr = figure.axes
    drawn = {line.get_label(): line for line in losses.get_lines()}
    assert list(drawn) == ["loss", "position"]  # the demo traj target has no shape part; no timings, no lr
    for name, line in drawn.items():
        assert list(line.get_xdata()) == steps and list(line.get_ydata()) == [r[name] for r in records]
    assert [t.get_text() for t in losses.get_legend().get_texts()] == list(drawn)
    assert list(lr.get_lines()[0].get_ydata()) == [r["lr"] for r in records]

    out = save_figure(tmp_path / "curves" / "training.png", figure)
    assert cv2.imread(str(out)).shape == (540, 720, 3)  # 7.2 x 5.4 in at 100 dpi
    assert [p.name for p in out.parent.iterdir()] == ["training.png"]  # no temp file left


def rendered(figure):
    figure.canvas.draw()
    return figure.canvas.get_renderer()


def test_bar_chart_draws_each_bar_to_its_height_with_error_bars():
    figure = bar_chart(
        {"a": {"probe": (40.0, 5.0), "fine-tune": (20.0, None)}, "b": {"probe": (10.0, None)}},
        "title",
        line=("chance", 8.3),
    )
    renderer, ax = rendered(figure), figure.axes[0]
    a_probe, b_probe, a_finetune = [bar.get_window_extent(renderer) for bar in ax.patches]
    assert a_probe.y0 == b_probe.y0 == a_finetune.y0  # from 0
    assert a_probe.height / a_finetune.height == pytest.approx(2.0, rel=0.02)  # 40 vs 20
    assert a_probe.height / b_probe.height == pytest.approx(4.0, rel=0.02)  # 40 vs 10
    assert a_finetune.x0 >= a_probe.x1 and b_probe.x0 > a_finetune.x1  # side by side, groups apart
    assert ax.patches[0].get_facecolor() == ax.patches[1].get_facecolor() != ax.patches[2].get_facecolor()

    (whisker,) = [c for c in ax.collections if len(c.get_segments())]  # only a's probe has an error
    ((low, high),) = [ax.transData.transform(segment) for segment in whisker.get_segments()]
    assert low[0] == pytest.approx((a_probe.x0 + a_probe.x1) / 2, abs=0.5)  # down the bar's middle
    assert (high[1] - a_probe.y1, a_probe.y1 - low[1]) == pytest.approx((a_probe.height / 8,) * 2, abs=0.5)  # +-5
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["probe", "fine-tune"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]


def test_bar_chart_line_label_overlaps_nothing_and_stays_in_the_figure():
    rng = np.random.default_rng(0)
    for case in range(10):
        groups = {
            f"method {g}" * (1 + g % 2): {
                f"series {k}": (float(rng.uniform(0, 100)), float(rng.uniform(1, 10)) if rng.random() < 0.5 else None)
                for k in range(1 + case % 3)
            }
            for g in range(int(rng.integers(1, 13)))
        }
        values = [value for bars in groups.values() for value, _ in bars.values()]
        chance = [0.0, max(values), float(rng.choice(values)), float(rng.uniform(0, 100))][case % 4]
        figure = bar_chart(groups, "title", line=(f"chance {chance:.1f} %", chance))
        renderer, ax = rendered(figure), figure.axes[0]
        (label,) = ax.texts
        box = label.get_window_extent(renderer)
        others = [
            a.get_window_extent(renderer)
            for a in [*ax.patches, *ax.lines, ax.get_legend(), *ax.get_xticklabels(), *ax.get_yticklabels()]
        ]
        whiskers = [Bbox(ax.transData.transform(s)) for c in ax.collections for s in c.get_segments()]
        for other in others + whiskers:  # bars, error bars and their caps, lines, legend, tick labels
            assert not box.overlaps(other), (case, other)
        assert figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1 and figure.bbox.y0 <= box.y0
        assert box.y1 <= figure.bbox.y1
        assert (box.y0 + box.y1) / 2 == pytest.approx(ax.transData.transform((0, chance))[1], abs=1.0)  # at its line


def test_confusion_figure_colours_counts_and_names():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 6]])  # rows: true; class 1 has no video
    names = ["move_left", "grow", "rotate_cw"]
    figure = confusion_figure(confusion, names, "title")
    renderer, ax = rendered(figure), figure.axes[0]
    rates = np.array([[0.75, 0.25, 0], [0, 0, 0], [0.25, 0, 0.75]])
    assert np.allclose(ax.images[0].get_array(), rates)
    assert [t.get_text() for t in ax.get_yticklabels()] == names == [t.get_text() for t in ax.get_xticklabels()]
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert written == {(0, 0): "3", (0, 1): "1", (2, 0): "2", (2, 2): "6"}  # (row, column): count

    pixels = np.asarray(renderer.buffer_rgba())[..., :3].astype(int)
    for (i, j), rate in np.ndenumerate(rates):  # a cell's colour, sampled beside its count, is viridis(rate)
        x, y = ax.transData.transform((j - 0.35, i - 0.35))
        expected = np.array(matplotlib.colormaps["viridis"](rate)[:3]) * 255
        assert np.abs(pixels[int(pixels.shape[0] - y), int(x)] - expected).max() < 3, (i, j)

    many = confusion_figure(np.eye(60, dtype=int), [f"c{i}" for i in range(60)], "title")
    assert not many.axes[0].texts and "c0" not in [t.get_text() for t in many.axes[0].get_xticklabels()]
