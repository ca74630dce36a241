import math

import numpy as np
import pytest
import torch

from motionmae.motion import hog as H
from motionmae.motion.trajectory import sample, start_points


def edge(theta_deg: float, size: int = 32) -> torch.Tensor:
    """(1, 3, size, size) soft step edge whose intensity rises along direction theta (image axes, y down)."""
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    t = math.radians(theta_deg)
    ramp = torch.sigmoid(((x - size / 2) * math.cos(t) + (y - size / 2) * math.sin(t)) / 1.5)
    return ramp.expand(1, 3, size, size)


@pytest.mark.parametrize("theta", [10, 50, 90, 130, 170])
def test_rotated_edge_moves_to_matching_bin(theta):
    cells = H.hog(edge(theta))  # (1, 9, 4, 4)
    centre = cells[0, :, 1:3, 1:3].sum((1, 2))
    assert centre.argmax().item() == theta // 20
    assert centre.max() > 0.8 * centre.sum()  # at a bin centre nearly all weight lands in that bin


def test_edge_between_bins_splits_between_neighbours():
    hist = H.hog(edge(40))[0, :, 1:3, 1:3].sum((1, 2))
    assert set(hist.topk(2).indices.tolist()) == {1, 2}
    assert hist[1] == pytest.approx(hist[2].item(), rel=0.15)


def test_each_channel_keeps_channels_apart():
    image = torch.zeros(1, 3, 32, 32)
    image[:, 1] = edge(90)[:, 1]  # only green has an edge
    cells = H.hog(image, channels="each").view(1, 3, 9, 4, 4)
    assert cells[:, 0].abs().max() == 0 and cells[:, 2].abs().max() == 0
    assert cells[0, 1, :, 1:3, 1:3].sum((1, 2)).argmax().item() == 4


def test_mirror_maps_bin_to_its_reflection():
    image = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    cells = H.hog(image)
    mirrored = H.hog(image.flip(-1))
    assert torch.allclose(mirrored, cells.flip(1).flip(-1), atol=1e-5)  # bin i -> 8 - i (theta -> 180 - theta)


def test_cell_map_at_cell_centres_is_the_cell_grid():
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    hist = H.pixel_hog(image)
    points = start_points(32, 48)[None]  # every cell centre
    read = sample(H.cell_map(hist), points, offset=3.5)  # (1, P, 9)
    grid = H.cell_grid(hist)  # (1, 9, 4, 6), row-major cells
    expected = grid.view(1, 9, 2, 2, 3, 2).permute(0, 2, 4, 3, 5, 1).reshape(1, -1, 9)  # token order, then cells
    assert torch.allclose(read, expected, atol=1e-6)


def test_flow_histograms_are_signed():
    right = H.orientation_histograms(torch.full((1, 1, 4, 4), 2.0), torch.zeros(1, 1, 4, 4), signed=True)
    left = H.orientation_histograms(torch.full((1, 1, 4, 4), -2.0), torch.zeros(1, 1, 4, 4), signed=True)
    down = H.orientation_histograms(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 2.0), signed=True)
    assert not torch.allclose(right, left)
    # 40-deg bins centred at 20, 60, ...: 0 deg splits bins 8 and 0, 180 deg is bin 4, 90 deg is 3/4 of the way to bin 2
    np.testing.assert_allclose(right[0, 0, :, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 1], atol=1e-5)
    np.testing.assert_allclose(left[0, 0, :, 0, 0], [0, 0, 0, 0, 2, 0, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(down[0, 0, :, 0, 0], [0, 0.5, 1.5, 0, 0, 0, 0, 0, 0], atol=1e-5)


def noisy_frames(m=6, height=32, width=48, seed=2):
    """Float frames (M, H, W, 3) on 0-255 without exact ties between the channels' gradient energies."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (m, height, width, 3), generator=g).float() + torch.rand(
        m, height, width, 3, generator=g
    )


@pytest.mark.parametrize("channels", ["max", "each"])
def test_cell_histograms_at_stride_one_is_the_cell_map(channels):
    frames = noisy_frames()
    expected = H.cell_map(H.pixel_hog(frames.permute(0, 3, 1, 2) / 255, channels=channels)).permute(0, 2, 3, 1)
    got = H.cell_histograms(frames, channels=channels)
    assert got.shape == expected.shape == (6, 25, 41, 9 if channels == "max" else 27)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(
        H.cell_histograms(frames.floor().to(torch.uint8), channels=channels),
        H.cell_histograms(frames.floor(), channels=channels),
    )


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_coarse_cell_histograms_are_exact_where_kept(stride):
    frames = noisy_frames()
    exact = H.cell_histograms(frames)
    coarse = H.cell_histograms(frames, stride=stride)
    assert torch.allclose(coarse, exact[:, ::stride, ::stride], atol=1e-5)
    if stride == 8:  # the ordinary cell grid
        grid = H.hog(frames.permute(0, 3, 1, 2) / 255)
        assert torch.allclose(coarse, grid.permute(0, 2, 3, 1), atol=1e-5)
    with pytest.raises(ValueError, match="stride 3"):
        H.cell_histograms(frames, stride=3)
