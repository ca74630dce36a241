import numpy as np
import pytest
import torch
import torch.nn.functional as F

from motionmae.io.video import read_frames
from motionmae.motion import hog as H
from motionmae.motion import trajectory as TR
from motionmae.motion.flow import video_flow
from motionmae.motion.targets import IMAGENET_MEAN, IMAGENET_STD, RELEASE, RELEASE_TRAJ, build_target, dead_zone


def random_clip(span, height, width, batch=1, flow_scale=2.0, seed=0):
    """Random frames uint8 (B, span, H, W, 3) and smooth random flow (B, span-1, H, W, 2) plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, span, height, width, 3), generator=g, dtype=torch.uint8)
    coarse = torch.randn(batch * (span - 1), 2, height // 16, width // 16, generator=g) * flow_scale
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    flow = smooth + 0.25 * flow_scale * torch.randn(smooth.shape, generator=g)
    return frames, flow.view(batch, span - 1, 2, height, width).permute(0, 1, 3, 4, 2).contiguous()


def test_traj_target_of_a_224px_clip_has_paper_shape_and_patch_norm():
    frames, flow = random_clip(build_target("traj").raw_span(16, 2), 224, 224)
    raw = build_target("traj", traj_norm="none")(frames, flow, num_frames=16, stride=2)[0]
    for norm in ("scale", "token"):
        target = build_target("traj", traj_norm=norm)
        assert target.dim == 4 * 6 * (2 + 9) == 264
        y, valid = target(frames, flow, num_frames=16, stride=2)
        assert y.shape == valid.shape == (1, 1568, 264)
        full = valid[0].all(dim=1)
        assert full.float().mean() > 0.9  # the small motion keeps most trajectories in frame
        shape, position = target.parts["shape"], target.parts["position"]
        parts = [shape, position] if norm == "token" else [shape]
        for part in parts:  # standardized per token
            values = y[0, full][:, part]
            assert values.mean(1).abs().max() < 1e-4
            assert (values.var(1, unbiased=False) - 1).abs().max() < 1e-2
    # the default: displacements in px (traj_scale 1) through the dead zone
    y = build_target("traj")(frames, flow, num_frames=16, stride=2)[0]
    moves = raw[0, full][:, position].view(-1, 4, 6, 2)
    assert torch.allclose(y[0, full][:, position].view(-1, 4, 6, 2), dead_zone(moves, 0.3))
    assert 0 < dead_zone(moves, 0.3).eq(moves).all(-1).all(-1).float().mean() < 1  # both kept and gated ones


def test_across_k_norm_is_the_release_patch_std_over_the_k_trajectories():
    target = build_target("traj", traj_norm="across_k", shape_norm="across_k", traj_len=4)
    frames, flow = random_clip(target.raw_span(4, 2), 64, 64)
    y, valid = target(frames, flow, num_frames=4, stride=2)
    full = valid[0].all(dim=1)
    position = y[0, full][:, target.parts["position"]].view(-1, 4, 4 * 2)  # (tokens, K, L*2)
    assert position.mean(1).abs().max() < 1e-4
    assert (position.var(1, unbiased=True) - 1).abs().max() < 1e-3  # unbiased: n - 1 = 3 in the denominator
    raw = build_target("traj", traj_norm="none", traj_len=4, shape=False)(frames, flow, num_frames=4, stride=2)[0]
    moves = raw[0, full].view(-1, 4, 8)
    expected = (moves - moves.mean(1, keepdim=True)) / (moves.std(1, keepdim=True) + 1e-6)
    assert torch.allclose(position, expected, atol=1e-4)


# ---------------------------------------------------------------- the default position normalization


def uniform_flow_clip(span, velocity, height=32, width=32):
    """Random frames and a flow moving everything by `velocity` (dx, dy) px per frame."""
    frames = torch.randint(
        0, 256, (1, span, height, width, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    return frames, torch.tensor(velocity, dtype=torch.float32).expand(1, span - 1, height, width, 2).contiguous()


def position_part(target, frames, flow, frames_n=2, stride=1):
    y, valid = target(frames, flow, num_frames=frames_n, stride=stride)
    return y[..., target.parts["position"]], valid[..., target.parts["position"]]


def test_default_keeps_direction_right_left_up_down_are_four_targets():
    target = build_target("traj", shape=False)
    span = target.raw_span(2, 1)
    directions = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
    ys = {}
    for name, (dx, dy) in directions.items():
        y, _ = position_part(target, *uniform_flow_clip(span, (0.8 * dx, 0.8 * dy), 64, 64))
        token = y[0, 5].view(4, 6, 2)  # an inner token: its trajectories stay in frame
        assert torch.allclose(token, torch.tensor([0.8 * dx, 0.8 * dy]).expand(4, 6, 2))
        ys[name] = token
    names = list(ys)
    assert all(not torch.allclose(ys[a], ys[b]) for i, a in enumerate(names) for b in names[i + 1 :])
    # the old default standardized each token: right and up collide, as do left and down
    token_norm = build_target("traj", shape=False, traj_norm="token")
    old = {
        name: position_part(token_norm, *uniform_flow_clip(span, (0.8 * dx, 0.8 * dy), 64, 64))[0][0, 5]
        for name, (dx, dy) in directions.items()
    }
    assert torch.allclose(old["right"], old["up"]) and torch.allclose(old["left"], old["down"])


def noise_flow(span, size, correlated, seed=0, level=0.1):
    """Still-scene flow noise of `level` px RMS per component: i.i.d. per pixel, or smooth over ~16 px."""
    g = torch.Generator().manual_seed(seed)
    if not correlated:
        noise = torch.randn(1, span - 1, size, size, 2, generator=g)
    else:
        coarse = torch.randn((span - 1) * 2, 1, size // 16, size // 16, generator=g)
        noise = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        noise = noise.view(1, span - 1, 2, size, size).permute(0, 1, 3, 4, 2)
    return (noise / noise.pow(2).mean().sqrt() * level).contiguous()


@pytest.mark.parametrize("correlated", [False, True])
def test_default_sends_still_noise_to_about_zero(correlated):
    target = build_target("traj", shape=False)
    span, size = target.raw_span(16, 2), 64
    frames = torch.randint(
        0, 256, (1, span, size, size, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    flow = noise_flow(span, size, correlated)
    y, valid = position_part(target, frames, flow, 16, 2)
    assert valid.float().mean() > 0.9
    assert y[valid].pow(2).mean().sqrt() <= 0.1
    # without the dead zone the noise stays, and the old per-token norm blows it up to unit variance
    kept, _ = position_part(build_target("traj", shape=False, dead_zone=0.0), frames, flow, 16, 2)
    assert kept[valid].pow(2).mean().sqrt() > 0.02
    old, _ = position_part(build_target("traj", shape=False, traj_norm="token"), frames, flow, 16, 2)
    assert old[valid].pow(2).mean().sqrt() > 0.3


def test_default_doubling_the_speed_doubles_the_target():
    target = build_target("traj", shape=False, traj_scale=0.5)
    span = target.raw_span(2, 1)
    for velocity in [(0.4, 0.0), (0.3, -0.2), (-0.5, 0.6)]:  # above the dead zone (0.3 px per step)
        once, valid = position_part(target, *uniform_flow_clip(span, velocity, 64, 64))
        twice, valid_twice = position_part(target, *uniform_flow_clip(span, (2 * velocity[0], 2 * velocity[1]), 64, 64))
        assert valid[0, 5].all() and valid_twice[0, 5].all()  # an inner token stays in frame at both speeds
        assert torch.allclose(once[0, 5].view(4, 6, 2), torch.tensor(velocity) / 0.5)
        assert torch.allclose(twice[0, 5], 2 * once[0, 5])
    slow, _ = position_part(target, *uniform_flow_clip(span, (0.1, 0.1), 64, 64))  # 0.14 px per step: in the dead zone
    assert slow.abs().max() == 0


def test_flipping_frames_and_flow_negates_x_motion_and_mirrors_hog():
    target = build_target("traj", traj_norm="none", shape_norm="none")
    frames, flow = random_clip(target.raw_span(4, 2), 64, 96, batch=2, flow_scale=3.0)
    frames = frames + torch.rand(frames.shape, generator=torch.Generator().manual_seed(1))  # no ties between channels
    flipped_flow = flow.flip(3) * torch.tensor([-1.0, 1.0])
    y, valid = target(frames, flow, num_frames=4, stride=2)
    yf, validf = target(frames.flip(3), flipped_flow, num_frames=4, stride=2)

    def mirrored(x, part):  # (B, N, K, ...) of one part with tokens and the cells inside them right to left
        return (
            x[..., part]
            .reshape(2, 2, 4, 6, 2, 2, 6, -1)
            .flip(3)
            .flip(5)
            .reshape(2, -1, 6, x[..., part].shape[-1] // 24)
        )

    position, shape = target.parts["position"], target.parts["shape"]
    assert torch.equal(mirrored(validf, position), valid[..., position].reshape(2, -1, 6, 2))
    assert torch.equal(mirrored(validf, shape), valid[..., shape].reshape(2, -1, 6, 9))
    assert valid.float().mean() > 0.5
    x_negated = y[..., position].reshape(2, -1, 6, 2) * torch.tensor([-1.0, 1.0])
    assert torch.allclose(mirrored(yf, position), x_negated, atol=1e-4)
    bins_mirrored = y[..., shape].reshape(2, -1, 6, 9).flip(-1)  # bin i -> 8 - i: theta -> 180 - theta
    assert torch.allclose(mirrored(yf, shape), bins_mirrored, atol=1e-5)


def test_no_interpolation_equals_full_target_at_stride_one():
    frames, flow = random_clip(build_target("traj").raw_span(8, 1), 32, 48)
    full = build_target("traj")(frames, flow, num_frames=8, stride=1)
    sparse = build_target("traj", interpolate=False)(frames, flow, num_frames=8, stride=1)
    assert torch.equal(full[0], sparse[0]) and torch.equal(full[1], sparse[1])


def test_no_interpolation_steps_over_the_input_stride():
    # Without interpolation one step spans s raw frames: the sum of s dense steps.
    dense = build_target("traj", traj_len=6, shape=False, traj_norm="none")
    sparse = build_target("traj", traj_len=3, interpolate=False, shape=False, traj_norm="none")
    assert sparse.raw_span(4, 2) == dense.raw_span(4, 2) == 2 * 2 + 6 + 1
    frames, flow = random_clip(dense.raw_span(4, 2), 32, 48)
    y_dense, _ = dense(frames, flow, num_frames=4, stride=2)
    y_sparse, _ = sparse(frames, flow, num_frames=4, stride=2)
    assert torch.allclose(y_sparse.view(1, -1, 4, 3, 2), y_dense.view(1, -1, 4, 3, 2, 2).sum(-2), atol=1e-5)


def rightward_clip(span, height=32, width=64, speed=3.0):
    frames = torch.randint(
        0, 256, (1, span, height, width, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    flow = torch.zeros(1, span - 1, height, width, 2)
    flow[..., 0] = speed
    return frames, flow


def test_trajectory_leaving_the_frame_is_left_out_of_the_loss():
    target = build_target("traj")
    frames, flow = rightward_clip(target.raw_span(2, 1))
    y, valid = target(frames, flow, num_frames=2, stride=1)  # tokens: 2 rows x 4 columns
    per_trajectory = valid[0, :, target.parts["position"]].view(8, 4, -1).all(-1)
    # 6 steps of 3 px: cells starting at x 51.5 and 59.5 end at 69.5 / 77.5 > 63.5, the others stay.
    assert per_trajectory.tolist() == ([[True] * 4] * 3 + [[False] * 4]) * 2
    mask = torch.ones(1, 8, dtype=torch.bool)
    noisy = y + torch.where(valid, 0.0, 100.0)
    loss, parts = target.loss(noisy, y, valid, mask)
    assert loss.item() == 0.0
    loss, _ = target.loss(y + 1.0, y, valid, mask)
    assert loss.item() == pytest.approx(2.0)  # 1 per part, parts summed 1 : 1


def test_token_validity_keeps_all_k_when_one_stays():
    target = build_target("traj", validity="token")
    frames, flow = rightward_clip(target.raw_span(2, 1), speed=1.8)  # 6 * 1.8 = 10.8: only the cell at 59.5 leaves
    _, valid = target(frames, flow, num_frames=2, stride=1)
    per_trajectory = build_target("traj")(frames, flow, num_frames=2, stride=1)[1]
    assert not per_trajectory[0, 3].all() and per_trajectory[0, 3].any()
    assert valid.all()


def test_loss_averages_parts_separately_over_masked_tokens():
    target = build_target("traj", position_weight=2.0)
    b, n, d = 2, 8, target.dim
    y = torch.randn(b, n, d)
    valid = torch.ones(b, n, d, dtype=torch.bool)
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, :6] = True
    pred = y.clone()
    pred[..., target.parts["position"]] += 1.0
    pred[:, 6:] += 50.0  # visible tokens do not count
    loss, parts = target.loss(pred, y, valid, mask)
    assert parts["position"].item() == pytest.approx(1.0) and parts["shape"].item() == pytest.approx(0.0)
    assert loss.item() == pytest.approx(2.0)
    masked_only, _ = target.loss(pred[:, :6], y, valid, mask)  # the decoder's (B, M, D) output
    assert masked_only.item() == pytest.approx(2.0)


def release_reference(frames, flow, num_frames, stride, steps=4):
    """The official release's K400 target, written slowly from its description (docs/fidelity.md).

    frames uint8 (span, H, W, 3), flow (span - 1, H, W, 2) numpy. Per token, in token order:
    HOG (K, 3, 9) of the tubelet's second input frame (ImageNet-normalized channels, Sobel
    with replicated border, orientation atan2 of the negated gradient in [0, 180) deg, bin i
    centred at 20i deg, magnitude split floor/ceil, mean over the 8x8 cell), trajectories
    (K, L, 2) from pixel (8i+4, 8j+4) of the slice's first raw frame (in-frame check, clamp,
    rounded flow at the pixel, move), each (step, coordinate) standardized across the K
    trajectories with the unbiased std + 1e-6, and the token's validity (any in frame).
    """
    _, height, width, _ = frames.shape
    hog_out, traj_out, valid_out = [], [], []
    sobel = (1, 2, 1)
    for j in range(num_frames // 2):
        image = (frames[(2 * j + 1) * stride] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        hist = np.zeros((height // 8, width // 8, 3, 9))
        for c in range(3):

            def at(y, x):
                return image[min(max(y, 0), height - 1), min(max(x, 0), width - 1), c]

            for y in range(height):
                for x in range(width):
                    gx = sum(w * (at(y + k - 1, x - 1) - at(y + k - 1, x + 1)) for k, w in enumerate(sobel))
                    gy = sum(w * (at(y - 1, x + k - 1) - at(y + 1, x + k - 1)) for k, w in enumerate(sobel))
                    position = np.arctan2(gy, gx) / np.pi * 9
                    position += 9 if position < 0 else 0
                    low, high = np.floor(position), np.ceil(position)
                    hist[y // 8, x // 8, c, int(high) % 9] += (position - low) * np.hypot(gx, gy)
                    hist[y // 8, x // 8, c, int(low) % 9] += (high - position) * np.hypot(gx, gy)
        hist /= 64
        moves = np.zeros((height // 8, width // 8, steps, 2))
        inside = np.ones((height // 8, width // 8), bool)
        for ci in range(height // 8):
            for cj in range(width // 8):
                x, y = 8 * cj + 4, 8 * ci + 4
                for step in range(steps):
                    inside[ci, cj] &= 0 <= x <= width - 1 and 0 <= y <= height - 1
                    x, y = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
                    dx, dy = np.clip(np.round(flow[2 * j * stride + step, int(y), int(x)]), -20, 20)
                    moves[ci, cj, step] = dx, dy
                    x, y = x + dx, y + dy
        for ti in range(height // 16):
            for tj in range(width // 16):
                cells = [(2 * ti + a, 2 * tj + b) for a in range(2) for b in range(2)]
                hog_out.append(np.stack([hist[c] for c in cells]))
                token = np.stack([moves[c] for c in cells])  # (K, L, 2)
                traj_out.append((token - token.mean(0)) / (token.std(0, ddof=1) + 1e-6))
                valid_out.append(any(inside[c] for c in cells))
    return np.stack(hog_out), np.stack(traj_out), np.array(valid_out)


def test_release_preset_matches_a_reference_written_from_the_release_description():
    target = build_target("hog+traj", **RELEASE)
    assert target.dim == 4 * 27 + 4 * 4 * 2 and list(target.parts) == ["hog", "position"]
    assert target.raw_span(16, 4) == 14 * 4 + 4 + 1
    span, size = target.raw_span(4, 3), 32
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (1, span, size, size, 3), generator=g, dtype=torch.uint8)
    frames[0, :, 8:24, :16] = frames[0, :, 8:9, :16]  # columns constant down a block: dy = 0 there (votes nothing)
    flow = torch.randn(1, span - 1, size, size, 2, generator=g) * 1.5
    flow[0, :, :16] += torch.tensor([0.0, -7.0])  # the top row of tokens leaves the frame
    y, valid = target(frames, flow, num_frames=4, stride=3)
    hog, traj, inside = release_reference(frames[0].numpy(), flow[0].numpy(), 4, 3)
    assert 0 < inside.sum() < len(inside)  # tokens in frame and out
    got_hog = y[0, :, target.parts["hog"]].view(-1, 4, 3, 9).numpy()
    assert np.allclose(got_hog, hog, rtol=1e-4, atol=1e-5) and hog[:, :, :, 0].max() > 0
    got = y[0, :, target.parts["position"]].view(-1, 4, 4, 2).numpy()
    token_valid = valid[0, :, target.parts["position"]]
    assert torch.equal(token_valid, torch.from_numpy(inside)[:, None].expand_as(token_valid))
    assert np.allclose(got[inside], traj[inside], atol=1e-4)
    # the summed loss (Eq. 1, as the release): squared errors summed per masked token, averaged over them
    mask = torch.zeros(1, len(inside), dtype=torch.bool)
    mask[0, ::2] = True
    pred = y + 0.5
    loss, parts = target.loss(pred[mask].view(1, -1, target.dim), y, valid, mask)
    masked = mask[0].numpy()
    assert parts["hog"].item() == pytest.approx(108 * 0.25)
    assert parts["position"].item() == pytest.approx(32 * 0.25 * inside[masked].mean())
    assert loss.item() == pytest.approx(parts["hog"].item() + parts["position"].item())


def test_summed_loss_weighs_shape_to_position_9_to_2():
    target = build_target("traj", loss_reduction="sum")
    y = torch.zeros(2, 3, target.dim)
    mask = torch.ones(2, 3, dtype=torch.bool)
    _, parts = target.loss(y + 1.0, y, torch.ones_like(y, dtype=torch.bool), mask)
    assert parts["shape"].item() / parts["position"].item() == pytest.approx(9 / 2)
    assert parts["position"].item() == pytest.approx(4 * 6 * 2)  # per token: K * L * 2 errors of 1
    _, means = build_target("traj").loss(y + 1.0, y, torch.ones_like(y, dtype=torch.bool), mask)
    assert means["shape"].item() == means["position"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="loss_reduction"):
        build_target("traj", loss_reduction="max")


def test_release_tracker_moves_whole_pixels_from_the_cell_pixel():
    target = build_target("traj", tracker="release", traj_norm="none", shape=False, traj_len=3)
    frames, flow = uniform_flow_clip(target.raw_span(2, 1), (1.4, -0.6))  # rounds to (1, -1)
    y, valid = target(frames, flow, num_frames=2, stride=1)
    assert torch.equal(y[0, 0].view(4, 3, 2), torch.tensor([1.0, -1.0]).expand(4, 3, 2))
    # top row of cells starts at y = 4: at 4, 3, 2 it stays in frame (the position after the last step is not checked)
    assert valid.all()
    _, valid = target(*uniform_flow_clip(target.raw_span(2, 1), (0.0, -2.2)), num_frames=2, stride=1)
    top = valid[0, 0].view(4, 3, 2)[:, 0, 0]  # cells row-major: the first two start on the top row, y = 4
    assert top.tolist() == [True, True, True, True]  # y = 4, 2, 0: in frame (then -2 is not checked)
    _, valid = target(*uniform_flow_clip(target.raw_span(2, 1), (0.0, -2.6)), num_frames=2, stride=1)
    assert valid[0, 0].view(4, 3, 2)[:, 0, 0].tolist() == [False, False, True, True]  # y = 4, 1, -2: out


def test_cell_lookup_reads_the_hog_of_the_cell_that_contains_the_point():
    target = build_target("traj", lookup="cell", shape_norm="none", traj_norm="none", traj_len=3)
    frames, flow = uniform_flow_clip(target.raw_span(2, 1), (3.0, 0.0))
    y, _ = target(frames, flow, num_frames=2, stride=1)
    shape = y[0, 0, target.parts["shape"]].view(4, 3, 9)  # token 0: cells (0, 0), (0, 1), (1, 0), (1, 1)
    cells = H.hog(frames[0].permute(0, 3, 1, 2).float() / 255)  # (span, 9, 4, 4) cell grid per frame
    for k, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        for step in range(3):
            x = 8 * col + 3.5 + 3 * step  # 3.5, 6.5, 9.5 -> cells 0, 0, 1
            assert torch.allclose(shape[k, step], cells[step, :, row, int((x + 0.5) // 8)], atol=1e-5)


def test_merged_trajectories():
    frames, flow = random_clip(build_target("traj").raw_span(2, 1), 32, 32, flow_scale=0.3)
    raw = build_target("traj", traj_norm="none", shape_norm="none")
    y, valid = raw(frames, flow, num_frames=2, stride=1)
    assert valid.all()
    position = y[0, :, raw.parts["position"]].view(4, 4, 6, 2)
    mean = build_target("traj", merge="mean", traj_norm="none", shape_norm="none")
    y_mean, _ = mean(frames, flow, num_frames=2, stride=1)
    assert mean.dim == 6 * 11
    assert torch.allclose(y_mean[0, :, mean.parts["position"]].view(4, 6, 2), position.mean(1), atol=1e-5)
    most = build_target("traj", merge="max", traj_norm="none", shape_norm="none", shape=False)
    y_max, _ = most(frames, flow, num_frames=2, stride=1)
    longest = position.norm(dim=-1).sum(-1).argmax(1)
    assert torch.equal(y_max[0].view(4, 6, 2), position[torch.arange(4), longest])


def test_pixel_target_is_videomae_per_patch_normalized_pixels():
    target = build_target("pixel")
    frames, _ = random_clip(target.raw_span(4, 3), 32, 48)
    assert target.raw_span(4, 3) == 10
    y, valid = target(frames, None, num_frames=4, stride=3)
    assert y.shape == (1, 2 * 2 * 3, 1536) and valid.all()
    patch = frames[0, [3 * 2, 3 * 3], 16:32, 16:32].float() / 255  # slice 1, row 1, column 1: input frames 2, 3
    patch = patch.reshape(-1, 3)
    expected = (patch - patch.mean(0)) / (patch.var(0).sqrt() + 1e-6)
    assert torch.allclose(y[0, 6 + 3 + 1].view(-1, 3), expected, atol=1e-5)
    frames[:, :, :16, :16] = 200  # token 0 of every slice: one flat colour
    frames[:, :, 0, 0, 0] = 201  # but one pixel a level brighter: a near-flat patch
    y, _ = target(frames, None, num_frames=4, stride=3)
    patch = frames[0, [0, 3], :16, :16].float().reshape(-1, 3) / 255
    expected = (patch - patch.mean(0)) / (patch.var(0).sqrt() + 1e-6)
    assert torch.allclose(y[0, 0].view(-1, 3)[:, 0], expected[:, 0], atol=1e-4)
    assert (y[0, 0].view(-1, 3)[:, 1:] == 0).all()  # flat channels: exact zeros (two passes give rounding x 1e6)


def test_hog_target_is_maskfeat_hog_of_the_middle_frame():
    target = build_target("hog")
    frames, _ = random_clip(8, 32, 32)
    y, _ = target(frames, None, num_frames=4, stride=2)
    assert y.shape == (1, 2 * 4, 108)
    middle = frames[0, 2 * 3].permute(2, 0, 1)[None].float() / 255  # slice 1 = input frames 2, 3 -> raw 6
    cells = H.hog(middle, channels="each")[0]  # (27, 4, 4)
    token = 4 + 1 * 2 + 1  # slice 1, row 1, column 1: cells (2..3, 2..3)
    assert torch.allclose(y[0, token].view(4, 27), cells[:, 2:4, 2:4].reshape(27, 4).T, atol=1e-6)


def test_flow_baselines():
    frames, flow = rightward_clip(build_target("hof").raw_span(4, 2), speed=2.0)
    assert build_target("flow").raw_span(4, 2) == 3 * 2 + 2
    y, _ = build_target("flow", norm="none")(frames, flow, num_frames=4, stride=2)
    assert y.shape == (1, 16, 1024) and torch.equal(y.view(1, 16, -1, 2)[..., 0], torch.full((1, 16, 512), 2.0))
    y, _ = build_target("hof")(frames, flow, num_frames=4, stride=2)
    assert y.shape == (1, 16, 72)
    hist = y.view(1, 16, 8, 9)  # 0 deg lies halfway between bins 8 and 0
    assert torch.allclose(hist[..., 0], torch.ones(1, 16, 8)) and torch.allclose(hist[..., 8], torch.ones(1, 16, 8))
    y, _ = build_target("mbh")(frames, flow, num_frames=4, stride=2)
    assert y.shape == (1, 16, 144) and y.abs().max() == 0  # uniform motion has no motion boundaries
    flow[:, :, :, 32:, 0] = -2.0  # a vertical boundary between x = 31 and 32
    y, _ = build_target("mbh")(frames, flow, num_frames=4, stride=2)
    boundary = y.view(1, 2, 2, 4, 2, 2, 2, 2, 9)[
        0, 0, 0, 1, 0, 0, 1
    ]  # slice 0, row 0, token col 1, frame 0, cell (0, 1)
    assert boundary[0].argmax() in (0, 8) and boundary[1].abs().max() == 0  # dx changes along x; dy is flat


def test_registry():
    assert build_target("hog+mbh").dim == 108 + 144
    combined = build_target("hog+traj", shape=False)
    assert combined.dim == 108 + 48 and list(combined.parts) == ["hog", "position"]
    assert combined.raw_span(16, 2) == build_target("traj").raw_span(16, 2)
    with pytest.raises(ValueError, match="unknown target 'optical'"):
        build_target("optical")
    with pytest.raises(ValueError, match="no option"):
        build_target("pixel", traj_len=4)
    with pytest.raises(ValueError, match="traj_norm"):
        build_target("traj", traj_norm="patch")
    target = build_target("traj")
    frames, flow = random_clip(target.raw_span(4, 2) - 1, 32, 32)
    with pytest.raises(ValueError, match="needs 11 raw frames"):
        target(frames, flow, num_frames=4, stride=2)
    with pytest.raises(ValueError, match="needs flow"):
        build_target("traj")(frames, None, num_frames=2, stride=1)


@pytest.mark.parametrize(
    "name, options",
    [
        ("traj", {}),
        ("traj", {"interpolate": False}),
        ("traj", {"shape": False, "traj_len": 4}),
        ("traj", RELEASE_TRAJ),
        ("pixel", {}),
        ("hog", {}),
        ("flow", {}),
        ("hof", {}),
        ("mbh", {}),
        ("hog+traj", RELEASE),
        ("pixel+mbh", {}),
    ],
)
def test_a_target_reads_only_the_frames_and_flow_fields_it_declares(name, options):
    """The loader leaves out what `span_reads` does not list: other values there change no target value."""
    target = build_target(name, **options)
    span = target.raw_span(4, 3)
    read_frames, read_flows = target.span_reads(4, 3)
    assert read_frames == sorted(set(read_frames)) and set(read_frames) <= set(range(span))
    assert read_flows == sorted(set(read_flows)) and set(read_flows) <= set(range(span - 1))
    assert len(read_frames) + len(read_flows) < 2 * span - 1  # something is left out
    frames, flow = random_clip(span, 32, 32, seed=1)
    mixed_frames, mixed_flow = random_clip(span, 32, 32, seed=2)
    mixed_frames[:, read_frames], mixed_flow[:, read_flows] = frames[:, read_frames], flow[:, read_flows]
    y, valid = target(frames, flow, num_frames=4, stride=3)
    y_mixed, valid_mixed = target(mixed_frames, mixed_flow, num_frames=4, stride=3)
    assert torch.equal(y, y_mixed) and torch.equal(valid, valid_mixed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["traj", "pixel", "hog", "flow", "hof", "mbh"])
def test_cpu_and_cuda_agree(name):
    target = build_target(name)
    frames, flow = random_clip(target.raw_span(4, 2), 64, 64, batch=2)
    y, valid = target(frames, flow, num_frames=4, stride=2)
    y_cuda, valid_cuda = target(frames.cuda(), flow.cuda(), num_frames=4, stride=2)
    agree = valid == valid_cuda.cpu()
    assert agree.float().mean() > 0.99  # a point exactly on the frame border may tip either way
    both = valid & valid_cuda.cpu()
    assert torch.allclose(y[both], y_cuda.cpu()[both], atol=1e-3, rtol=1e-3)


def reference_shape_part(frames, flow, num_frames, stride, steps=6):
    """The shape part (B, N, K, L, 9) the direct way: per step, HOG maps of the whole batch of frames, read at the
    points."""
    b, _, h, w, _ = frames.shape
    starts = torch.arange(num_frames // 2) * 2 * stride
    points = TR.start_points(h, w).expand(b, len(starts), -1, -1)
    positions = TR.track(flow, starts, steps, points)  # (B, S, L + 1, P, 2)
    hogs = []
    for i in range(steps):
        images = frames[:, starts + i].permute(0, 1, 4, 2, 3).flatten(0, 1) / 255
        cells = H.cell_map(H.pixel_hog(images))
        hogs.append(TR.sample(cells, positions[:, :, i].flatten(0, 1), offset=3.5))
    hogs = torch.stack(hogs, dim=1).view(b, len(starts), steps, -1, 4, 9)  # (B, S, L, tokens, K, 9)
    return hogs.permute(0, 1, 3, 4, 2, 5).reshape(b, -1, 4, steps, 9)


def test_exact_hog_stride_matches_the_direct_computation():
    target = build_target("traj", shape_norm="none", hog_stride=1)
    frames, flow = random_clip(target.raw_span(4, 2), 32, 48, batch=2, flow_scale=3.0)
    frames = frames + torch.rand(frames.shape, generator=torch.Generator().manual_seed(1))  # no ties between channels
    y, valid = target(frames, flow, num_frames=4, stride=2)
    shape = target.parts["shape"]
    got = y[..., shape].view(2, -1, 4, 6, 9)
    keep = valid[..., shape].view(2, -1, 4, 6, 9)
    assert keep.float().mean() > 0.5
    assert torch.allclose(got[keep], reference_shape_part(frames, flow, 4, 2)[keep], atol=1e-4)


def real_clip(path, span, size=64):
    """A 64x64 crop of a shipped video's first `span` frames (uint8, batch of 1) and its DIS flow."""
    clip = read_frames(path, np.arange(span), short_side=size)
    frames = np.ascontiguousarray(clip.frames[:, :size, :size])
    return torch.from_numpy(frames)[None], torch.from_numpy(video_flow(frames))[None]


@pytest.mark.parametrize("video", ["bikes", "bigbuckbunny"])
def test_coarse_hog_stride_is_close_to_exact_on_real_video(video, request):
    # The default hog_stride=2 reads cells kept every 2 px; measured 3-4 % relative error on these clips.
    exact = build_target("traj", shape_norm="none", hog_stride=1)
    frames, flow = real_clip(request.getfixturevalue(video), exact.raw_span(16, 2))
    y_exact, valid = exact(frames, flow, num_frames=16, stride=2)
    coarse = build_target("traj", shape_norm="none")
    assert coarse.hog_stride == 2
    y, valid_coarse = coarse(frames, flow, num_frames=16, stride=2)
    position, shape = exact.parts["position"], exact.parts["shape"]
    assert torch.equal(valid, valid_coarse) and torch.equal(y[..., position], y_exact[..., position])
    keep = valid[..., shape]
    error = (y[..., shape][keep] - y_exact[..., shape][keep]).norm() / y_exact[..., shape][keep].norm()
    assert 0 < error < 0.06
    normalized = [
        build_target("traj", hog_stride=s)(frames, flow, num_frames=16, stride=2)[0][..., shape] for s in (1, 2)
    ]
    assert (normalized[0] - normalized[1])[keep].pow(2).mean().sqrt() < 0.08  # on unit-variance targets
