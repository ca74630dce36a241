"""Checkpoint interop: Hugging Face VideoMAE both ways, official VideoMAE / MME names, mismatches.

Hugging Face models are built locally from a `VideoMAEConfig` (random weights, then jittered so
that no bias or norm is at its trivial init); nothing is downloaded.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

transformers = pytest.importorskip("transformers")

from motionmae.cli.main import main
from motionmae.config import Config
from motionmae.models.checkpoints import CheckpointError, atomic_save
from motionmae.models.interop import export_hf, load_pretrained, model_from_checkpoint
from motionmae.models.vit import PretrainModel, VideoClassifier, VisionTransformer

pytestmark = pytest.mark.slow  # every test builds Hugging Face models

FRAMES, SIZE, PIXELS, CLASSES = 4, 64, 3 * 2 * 16 * 16, 7
N = (FRAMES // 2) * (SIZE // 16) ** 2  # 32 tokens
TOL = 1e-5


def hf_config(**kw):
    """Our "tiny" size in Hugging Face terms, with VideoMAE's LayerNorm eps in the blocks."""
    return transformers.VideoMAEConfig(
        image_size=SIZE,
        num_frames=FRAMES,
        tubelet_size=2,
        patch_size=16,
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        decoder_hidden_size=96,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=3,
        decoder_intermediate_size=384,
        layer_norm_eps=1e-6,
        **kw,
    )


def jitter(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def hf_eps(model):
    """Hugging Face hard-codes eps 1e-5 (torch's default) in fc_norm and the decoder norm; VideoMAE uses 1e-6."""
    for norm in (getattr(model, "fc_norm", None), getattr(getattr(model, "decoder", None), "norm", None)):
        if norm is not None:
            norm.eps = 1e-5
    return model


@pytest.fixture(scope="module")
def video():
    return torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def mask():
    """Bool (2, N), 24 masked per sample at different places."""
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(2, N, dtype=torch.bool)
    for row in mask:
        row[torch.randperm(N, generator=g)[:24]] = True
    return mask


def hf_in(video):
    return video.permute(0, 2, 1, 3, 4)  # Hugging Face takes (B, T, C, H, W)


def max_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------- Hugging Face -> ours


@torch.no_grad()
def test_hf_model_into_vision_transformer(video, mask):
    hf = jitter(transformers.VideoMAEModel(hf_config(use_mean_pooling=False)))
    ours = VisionTransformer("tiny", FRAMES, SIZE, final_norm=True).eval()
    loaded = load_pretrained(hf.state_dict(), ours)
    assert loaded.layout == "Hugging Face VideoMAEModel" and not loaded.ignored
    assert max_diff(hf(hf_in(video)).last_hidden_state, ours(video)) <= TOL
    assert max_diff(hf(hf_in(video), bool_masked_pos=mask).last_hidden_state, ours(video, mask)) <= TOL


@torch.no_grad()
def test_hf_classifier_into_video_classifier(video):
    hf = jitter(transformers.VideoMAEForVideoClassification(hf_config(num_labels=CLASSES)))
    ours = VideoClassifier(CLASSES, "tiny", FRAMES, SIZE).eval()
    load_pretrained(hf.state_dict(), ours)
    logits = hf(hf_in(video)).logits
    assert max_diff(logits, hf_eps(ours)(video)) <= TOL
    assert logits.std() > 0.1  # the comparison is not between near-zero outputs


@torch.no_grad()
def test_hf_pretraining_into_pretrain_model(video, mask):
    hf = jitter(transformers.VideoMAEForPreTraining(hf_config(use_mean_pooling=False)))
    ours = PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=2).eval()
    load_pretrained(hf.state_dict(), ours)
    pred = ours(video, mask)
    assert pred.shape == (2, 24, PIXELS)  # masked tokens, in the order of mask positions, as Hugging Face's
    assert max_diff(hf(hf_in(video), bool_masked_pos=mask).logits, hf_eps(ours)(video, mask)) <= TOL
    # with VideoMAE's own eps the decoder norm differs from Hugging Face's by a hair, no more
    assert max_diff(hf(hf_in(video), bool_masked_pos=mask).logits, pred) <= 1e-4


def test_hf_pretraining_without_encoder_norm_is_refused():
    hf = transformers.VideoMAEForPreTraining(hf_config(use_mean_pooling=True))  # no videomae.layernorm
    with pytest.raises(CheckpointError, match=r"missing: encoder\.norm\.bias, encoder\.norm\.weight"):
        load_pretrained(hf.state_dict(), PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=2))


# ---------------------------------------------------------------- ours -> Hugging Face


@torch.no_grad()
def test_export_pretrain_model(tmp_path, video, mask):
    ours = jitter(PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=2))
    assert export_hf(ours, tmp_path)["architectures"] == ["VideoMAEForPreTraining"]
    hf, info = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    logits = hf.eval()(hf_in(video), bool_masked_pos=mask).logits
    assert max_diff(logits, hf_eps(ours)(video, mask)) <= TOL

    back = PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=2)
    load_pretrained(tmp_path, back)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in ours.state_dict().items())


@torch.no_grad()
def test_export_classifier(tmp_path, video):
    ours = jitter(VideoClassifier(CLASSES, "tiny", FRAMES, SIZE))
    export_hf(ours, tmp_path)
    hf, info = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert hf.config.num_labels == CLASSES
    assert max_diff(hf.eval()(hf_in(video)).logits, hf_eps(ours)(video)) <= TOL


@torch.no_grad()
def test_export_motion_target_keeps_the_encoder(tmp_path, video, mask):
    ours = jitter(PretrainModel(264, "tiny", FRAMES, SIZE))  # MME trajectories: no Hugging Face decoder
    assert export_hf(ours, tmp_path)["architectures"] == ["VideoMAEModel"]
    hf = transformers.VideoMAEModel.from_pretrained(tmp_path).eval()
    assert max_diff(hf(hf_in(video), bool_masked_pos=mask).last_hidden_state, ours.encoder(video, mask)) <= TOL


# ---------------------------------------------------------------- official VideoMAE / MME names


def hf_conversion_name(official: str) -> str:
    """Hugging Face's `convert_videomae_to_pytorch.rename_key` (official name -> Hub name), then transformers 5's
    renaming of `q_bias` / `v_bias` to `query.bias` / `value.bias`. (The qkv weight it splits in three.)"""
    name = official.replace("encoder.", "")
    for old, new in [
        ("patch_embed.proj", "videomae.embeddings.patch_embeddings.projection"),
        ("decoder.blocks", "decoder.decoder_layers"),
        ("blocks", "videomae.encoder.layer"),
        ("attn.proj", "attention.output.dense"),
        ("attn", "attention.attention"),
        ("norm1", "layernorm_before"),
        ("norm2", "layernorm_after"),
        ("mlp.fc1", "intermediate.dense"),
        ("mlp.fc2", "output.dense"),
    ]:
        name = name.replace(old, new)
    if name in ("norm.weight", "norm.bias"):
        name = "videomae.layer" + name
    if "head" in name and "decoder" not in name:
        name = name.replace("head", "classifier")
    return name.replace("attention.q_bias", "attention.query.bias").replace("attention.v_bias", "attention.value.bias")


HF_TO_OFFICIAL = [  # written independently of motionmae.models.interop; checked against hf_conversion_name
    ("videomae.embeddings.patch_embeddings.projection", "patch_embed.proj"),
    ("videomae.encoder.layer", "blocks"),
    ("decoder.decoder_layers", "decoder.blocks"),
    ("videomae.layernorm", "norm"),
    ("attention.output.dense", "attn.proj"),
    ("attention.attention.query.bias", "attn.q_bias"),
    ("attention.attention.value.bias", "attn.v_bias"),
    ("attention.attention.query.weight", "attn.qkv.weight"),
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("classifier", "head"),
]


def official_state(hf_state: dict, pretraining: bool) -> dict:
    """The official VideoMAE state dict that Hugging Face's conversion turns into `hf_state`."""
    official = {}
    for key, value in hf_state.items():
        if key.endswith(("attention.attention.key.weight", "attention.attention.value.weight")):
            continue
        name = key
        for hf, original in HF_TO_OFFICIAL:
            name = name.replace(hf, original)
        if name.endswith("attn.qkv.weight"):  # HF's conversion cuts qkv into query, key, value rows
            value = torch.cat([hf_state[key.replace("query", part)] for part in ("query", "key", "value")])
        else:
            assert hf_conversion_name(name) == key, (name, key)
        if pretraining and not name.startswith(("decoder.", "encoder_to_decoder", "mask_token")):
            name = f"encoder.{name}"  # the pretraining model keeps its backbone under `encoder.`
        official[name] = value
    return official


@torch.no_grad()
def test_official_pretraining_names(video, mask):
    hf = jitter(transformers.VideoMAEForPreTraining(hf_config(use_mean_pooling=False)))
    official = official_state(hf.state_dict(), pretraining=True)
    assert "encoder.blocks.0.attn.qkv.weight" in official and "decoder.blocks.1.attn.v_bias" in official
    assert "encoder.norm.weight" in official and "encoder_to_decoder.weight" in official
    ours = PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=2).eval()
    loaded = load_pretrained({"model": official, "epoch": 799}, ours)
    assert loaded.layout == "VideoMAE/MME pretraining"
    assert max_diff(hf(hf_in(video), bool_masked_pos=mask).logits, hf_eps(ours)(video, mask)) <= TOL


@pytest.mark.parametrize("wrap", ["top-level", "encoder-prefix", "ddp-prefix"])
@torch.no_grad()
def test_official_finetuned_names(video, wrap):
    hf = jitter(transformers.VideoMAEForVideoClassification(hf_config(num_labels=CLASSES)))
    official = official_state(hf.state_dict(), pretraining=False)
    assert "blocks.0.attn.qkv.weight" in official and "fc_norm.weight" in official and "head.weight" in official
    if wrap == "encoder-prefix":
        official = {(k if k.startswith(("fc_norm", "head")) else f"encoder.{k}"): v for k, v in official.items()}
    elif wrap == "ddp-prefix":
        official = {f"module.{k}": v for k, v in official.items()}
    ours = VideoClassifier(CLASSES, "tiny", FRAMES, SIZE).eval()
    load_pretrained({"module": official}, ours)
    assert max_diff(hf(hf_in(video)).logits, hf_eps(ours)(video)) <= TOL


def test_mme_release_layout_gives_its_encoder(video):
    """MME's released model keeps a list of decoders with MLP heads: only the encoder fits our models."""
    source = jitter(PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=1))
    state = {}
    for key, value in source.state_dict().items():
        key = key.replace("decoder.", "decoder.0.").replace("encoder_to_decoder.", "encoder_to_decoder.0.")
        state[key.replace("decoder.0.head.", "decoder.0.head.0.0.")] = value
    state["decoder.0.head.0.2.weight"] = torch.zeros(108, PIXELS)

    encoder = VisionTransformer("tiny", FRAMES, SIZE).eval()
    loaded = load_pretrained({"model": state}, encoder)
    assert loaded.layout == "MME pretraining (list of decoders)"
    assert "decoder.0.head.0.2.weight" in loaded.ignored
    with torch.no_grad():
        assert torch.equal(encoder(video), source.encoder.eval()(video))
    with pytest.raises(CheckpointError, match="MME's MLP heads.*encoder_only=True"):
        load_pretrained({"model": state}, PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=1))
    model, _ = model_from_checkpoint({"model": state}, FRAMES, SIZE)
    assert isinstance(model, VisionTransformer)


def test_position_tables(video):
    ours = PretrainModel(PIXELS, "tiny", FRAMES, SIZE, decoder_depth=1)
    state = dict(ours.state_dict(), **{"encoder.pos_embed": ours.encoder.pos_embed.clone()})
    load_pretrained(state, ours)  # a saved sinusoid table is redundant
    state["encoder.pos_embed"] = torch.randn_like(state["encoder.pos_embed"])
    with pytest.raises(CheckpointError, match="learned position embedding"):
        load_pretrained(state, ours)


# ---------------------------------------------------------------- mismatches and our own checkpoints


def our_checkpoint(path, target_dim=264, size="tiny", patch=16):
    model = jitter(PretrainModel(target_dim, size, FRAMES, SIZE, patch=patch, decoder_depth=1))
    config = Config()
    config.model.size, config.model.patch, config.data.frames, config.data.size = size, patch, FRAMES, SIZE
    atomic_save(
        {"model": model.state_dict(), "config": config.to_dict(), "target": {"name": "traj", "dim": target_dim}}, path
    )
    return model


@pytest.mark.parametrize(
    "other, keys",
    [
        (
            dict(size="small"),
            r"shape mismatch: decoder\.blocks\.0\.attn\.proj\.bias \(96,\) vs model \(192,\).*"
            r"\(\+\d+ more\).*Checkpoint: encoder 192 wide.*model: encoder 384 wide",
        ),
        (
            dict(target_dim=PIXELS),
            r"decoder\.head\.bias \(264,\) vs model \(1536,\).*decoder\.head\.weight.*"
            r"264 outputs per token; model: .*1536 outputs per token",
        ),
        (dict(patch=8), r"encoder\.patch_embed\.proj\.weight \(192, 3, 2, 16, 16\) vs model \(192, 3, 2, 8, 8\)"),
    ],
)
def test_mismatch_lists_the_keys(tmp_path, other, keys):
    our_checkpoint(tmp_path / "checkpoint.pt")
    kwargs = dict(dict(target_dim=264, size="tiny", patch=16), **other)
    model = PretrainModel(kwargs["target_dim"], kwargs["size"], FRAMES, SIZE, patch=kwargs["patch"], decoder_depth=1)
    with pytest.raises(CheckpointError, match=keys) as err:
        load_pretrained(tmp_path / "checkpoint.pt", model)
    assert str(tmp_path / "checkpoint.pt") in str(err.value) and "does not fit" in str(err.value)


def test_classifier_of_other_classes(video):
    source = jitter(VideoClassifier(CLASSES, "tiny", FRAMES, SIZE))
    model = VideoClassifier(5, "tiny", FRAMES, SIZE).eval()
    with pytest.raises(CheckpointError, match=r"head\.weight \(7, 192\) vs model \(5, 192\).*encoder_only=True"):
        load_pretrained(source.state_dict(), model)
    loaded = load_pretrained(source.state_dict(), model, encoder_only=True)
    assert set(loaded.initialized) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert set(loaded.ignored) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    with torch.no_grad():
        assert torch.equal(model.encoder(video), source.encoder.eval()(video))


def test_our_pretraining_checkpoint_into_classifier(tmp_path):
    source = our_checkpoint(tmp_path / "checkpoint.pt")
    model = VideoClassifier(CLASSES, "tiny", FRAMES, SIZE)
    loaded = load_pretrained(tmp_path / "checkpoint.pt", model)
    assert loaded.layout == "motionmae checkpoint"
    assert {"encoder.norm.weight", "decoder.head.weight", "mask_token"} <= set(loaded.ignored)
    assert set(loaded.initialized) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert "left as initialized: fc_norm, head" in str(loaded)
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, source.encoder.state_dict()[key])


def test_unreadable_sources(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_pretrained(tmp_path / "missing.pth", VisionTransformer("tiny", FRAMES, SIZE))
    torch.save({"epoch": 3, "args": "x"}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd\.pth: holds no state dict"):
        load_pretrained(tmp_path / "odd.pth", VisionTransformer("tiny", FRAMES, SIZE))


# ---------------------------------------------------------------- command line


@torch.no_grad()
def test_convert_command_both_ways(tmp_path, video, mask, capsys):
    source = our_checkpoint(tmp_path / "checkpoint.pt", target_dim=PIXELS).eval()
    assert main(["convert", str(tmp_path / "checkpoint.pt"), str(tmp_path / "hf")]) == 0
    assert "Hugging Face VideoMAEForPreTraining" in capsys.readouterr().out
    hf = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    assert max_diff(hf(hf_in(video), bool_masked_pos=mask).logits, hf_eps(source)(video, mask)) <= TOL

    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back.pt")]) == 0
    model, loaded = model_from_checkpoint(tmp_path / "back.pt")
    assert isinstance(model, PretrainModel) and loaded.layout == "motionmae checkpoint"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in source.state_dict().items())

    torch.save({"epoch": 3}, tmp_path / "odd.pth")
    assert main(["convert", str(tmp_path / "odd.pth"), str(tmp_path / "out")]) == 1  # a file that fails to load
    assert "odd.pth: holds no state dict" in capsys.readouterr().err
