"""Video ViT: shapes, VideoMAE parameter layout, token order, visible-only encoding."""

import math

import pytest
import torch

from motionmae.models.vit import SIZES, PretrainModel, VideoClassifier, VisionTransformer, sincos_table


def random_mask(batch: int, tokens: int, ratio: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    count = round(ratio * tokens)
    order = torch.stack([torch.randperm(tokens, generator=generator) for _ in range(batch)])
    return torch.zeros(batch, tokens, dtype=torch.bool).scatter_(1, order[:, :count], True)


def test_pretrain_model_predicts_masked_tokens():
    model = PretrainModel(target_dim=264, size="tiny", frames=8, img_size=64, decoder_depth=1)
    video = torch.randn(3, 3, 8, 64, 64)
    mask = random_mask(3, model.encoder.num_tokens, 0.75)
    assert model.encoder.num_tokens == 4 * 4 * 4
    assert model.encoder(video, mask).shape == (3, 16, 192)
    prediction = model(video, mask)
    assert prediction.shape == (3, 48, 264)
    prediction.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_videomae_parameter_layout():
    keys = set(PretrainModel(target_dim=1536, size="small", frames=16, img_size=224, decoder_depth=4).state_dict())
    for key in [
        "encoder.patch_embed.proj.weight",
        "encoder.blocks.11.attn.qkv.weight",
        "encoder.blocks.0.attn.q_bias",
        "encoder.blocks.0.attn.v_bias",
        "encoder.norm.weight",
        "encoder_to_decoder.weight",
        "mask_token",
        "decoder.blocks.3.mlp.fc2.weight",
        "decoder.norm.bias",
        "decoder.head.weight",
    ]:
        assert key in keys, key
    assert "encoder.blocks.0.attn.qkv.bias" not in keys and "encoder.pos_embed" not in keys
    classifier = set(VideoClassifier(num_classes=5, size="small").state_dict())
    assert {"encoder.patch_embed.proj.weight", "fc_norm.weight", "head.weight"} <= classifier
    assert "encoder.norm.weight" not in classifier  # mean pooling uses fc_norm instead


def test_encoder_sizes():
    base = VisionTransformer("base")
    assert sum(p.numel() for p in base.parameters()) == pytest.approx(86.2e6, rel=0.01)
    assert base.num_tokens == 1568
    for name, spec in SIZES.items():
        assert spec.dim % spec.heads == 0 and spec.decoder_dim % spec.decoder_heads == 0, name


def test_token_order_is_time_major_then_rows_then_columns():
    encoder = VisionTransformer("tiny", frames=4, img_size=32, tubelet=2, patch=16)
    video = torch.zeros(1, 3, 4, 32, 32)
    video[:, :, 2:4, 16:32, 0:16] = 1.0  # second temporal slice, bottom-left patch
    tokens = encoder.patch_embed(video)[0]
    changed = (tokens - encoder.patch_embed.proj.bias).abs().sum(dim=1) > 0
    t, r, c = 1, 1, 0
    assert changed.nonzero().flatten().tolist() == [t * 4 + r * 2 + c]


def test_masked_pixels_do_not_reach_the_encoder():
    encoder = VisionTransformer("tiny", frames=4, img_size=32).eval()
    mask = torch.tensor([[True, False, False, True, False, True, False, True]])
    video = torch.randn(1, 3, 4, 32, 32)
    changed = video.clone()
    changed[:, :, 0:2, 0:16, 0:16] += 5.0  # token 0, which is masked
    assert torch.allclose(encoder(video, mask), encoder(changed, mask))
    changed[:, :, 0:2, 0:16, 16:32] += 5.0  # token 1, visible
    assert not torch.allclose(encoder(video, mask), encoder(changed, mask))


def test_visible_only_embedding_equals_the_convolution():
    embed = VisionTransformer("tiny", frames=8, img_size=48, tubelet=2, patch=16).patch_embed
    video = torch.randn(3, 3, 8, 48, 48)
    mask = random_mask(3, 4 * 3 * 3, 0.75, seed=1)
    every = embed(video)  # the Conv3d over all tubelets
    visible = embed(video, mask)
    assert visible.shape == (3, 9, 192)
    assert torch.allclose(visible, every[~mask].reshape(3, 9, 192), atol=1e-5)
    visible.sum().backward()
    assert embed.proj.weight.grad.abs().sum() > 0 and embed.proj.bias.grad is not None


def test_sincos_table_matches_the_transformer_formula():
    table = sincos_table(10, 8)[0]
    pos, i = 7, 3  # dimension pair i -> dims 2i (sin) and 2i+1 (cos)
    angle = pos / 10000 ** (2 * i / 8)
    assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_classifier_and_drop_path():
    model = VideoClassifier(num_classes=12, size="tiny", frames=8, img_size=64, drop_path=0.5)
    video = torch.randn(2, 3, 8, 64, 64)
    model.eval()
    assert model(video).shape == (2, 12)
    assert torch.equal(model(video), model(video))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(video), model(video))  # stochastic depth is active in training


def test_part_heads_are_mlps_with_their_activations():
    parts = {"hog": 108, "position": 32}
    model = PretrainModel(
        140,
        "tiny",
        frames=4,
        img_size=32,
        decoder_depth=1,
        decoder_dim=192,
        decoder_heads=6,
        head_parts=parts,
        head_activations={"hog": "sigmoid", "position": "tanh"},
    )
    heads = model.decoder.head.heads
    assert list(heads) == ["hog", "position"]
    assert [(h[0].in_features, h[0].out_features, h[2].out_features) for h in heads.values()] == [
        (192, 512, 108),
        (192, 512, 32),
    ]
    video = torch.randn(2, 3, 4, 32, 32) * 30  # large inputs drive the outputs towards the activations' bounds
    out = model(video, random_mask(2, model.encoder.num_tokens, 0.5))
    assert out.shape == (2, 4, 140)
    assert out[..., :108].min() > 0 and out[..., :108].max() < 1
    assert out[..., 108:].abs().max() < 1 and out[..., 108:].min() < 0
    out.sum().backward()
    with pytest.raises(ValueError, match="do not add up"):
        PretrainModel(141, "tiny", frames=4, img_size=32, head_parts=parts)
    with pytest.raises(ValueError, match="activation must be one of"):
        PretrainModel(140, "tiny", frames=4, img_size=32, head_parts=parts, head_activations={"hog": "relu"})
    with pytest.raises(ValueError, match="unknown target part"):
        PretrainModel(140, "tiny", frames=4, img_size=32, head_parts=parts, head_activations={"shape": "tanh"})
