"""Checkpoints of other code bases: official VideoMAE / MME `.pth` files and Hugging Face VideoMAE.

Every source is first renamed to one layout, ours, which is VideoMAE's own pretraining layout:
the backbone under `encoder.` (`patch_embed.proj`, `blocks.i.*`, `norm`), then either the
pretraining decoder (`encoder_to_decoder`, `mask_token`, `decoder.*`) or the classifier
(`fc_norm`, `head`). Layouts read:

- ours: `runs/<name>/checkpoint.pt` (a dict with "model" and "config"), or its `.safetensors` export;
- official VideoMAE / MME pretraining (`{"model": ...}`, already our names);
- official fine-tuned (`{"model"|"module": ...}`, backbone at the top level or under
  `encoder.` / `backbone.`, keys maybe prefixed `module.`);
- MME's released pretraining, whose decoders are a list (`decoder.0.*`) with MLP heads per
  target: only its encoder has a counterpart here;
- Hugging Face `VideoMAEModel`, `VideoMAEForPreTraining`, `VideoMAEForVideoClassification`
  (a state dict, a `.safetensors` / `.bin` file, or a `save_pretrained` folder), with either
  the Hub's `q_bias` / `v_bias` or transformers 5's `query.bias` / `value.bias`.

Hugging Face differences that stay: its input is `(B, T, C, H, W)` rather than `(B, C, T, H, W)`,
and its `fc_norm` and decoder `norm` use LayerNorm eps 1e-5 where VideoMAE and we use 1e-6
(its blocks take `layer_norm_eps` from the config; the Hub's ports say 1e-12, our exports 1e-6).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn as nn
from safetensors.torch import save_file

from motionmae.config import Config, FinetuneConfig
from motionmae.models.checkpoints import CheckpointError, atomic_save, load, load_state_dict_strict, save_safetensors
from motionmae.models.vit import SIZES, Block, PretrainModel, VideoClassifier, VisionTransformer, sincos_table

# (ours, Hugging Face) name prefixes of modules, and names inside a transformer block. The qkv
# weight is one tensor here and three (query, key, value) there: see _split_qkv / _merge_qkv.
HF_MODULES = [
    ("encoder.patch_embed.proj.", "videomae.embeddings.patch_embeddings.projection."),
    ("encoder.blocks.", "videomae.encoder.layer."),
    ("encoder.norm.", "videomae.layernorm."),
    ("decoder.blocks.", "decoder.decoder_layers."),
    ("head.", "classifier."),
]
HF_BLOCK = [
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("attn.qkv.", "attention.attention.qkv."),
    ("attn.q_bias", "attention.attention.q_bias"),
    ("attn.v_bias", "attention.attention.v_bias"),
    ("attn.proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
]
HF_WEIGHT_FILES = ["model.safetensors", "pytorch_model.bin"]
BACKBONE = ("patch_embed.", "blocks.", "norm.", "pos_embed")  # top-level names of a fine-tuned backbone


@dataclass
class Loaded:
    """What `load_pretrained` did."""

    layout: str  # how the source was read, e.g. "Hugging Face VideoMAEForPreTraining"
    initialized: list[str] = field(default_factory=list)  # model tensors left as initialized (a new head)
    ignored: list[str] = field(default_factory=list)  # checkpoint tensors not used (a pretraining decoder)

    def __str__(self):
        def parts(keys):  # module names: decoder, head, encoder.norm, ...
            return ", ".join(sorted({".".join(k.split(".")[: 2 if k.startswith("encoder.") else 1]) for k in keys}))

        text = f"loaded {self.layout}"
        if self.initialized:
            text += f"; left as initialized: {parts(self.initialized)}"
        if self.ignored:
            text += f"; not used: {parts(self.ignored)}"
        return text


@dataclass
class Checkpoint:
    """A checkpoint renamed to our layout."""

    state: dict  # tensors by our names
    layout: str
    name: str  # for messages: the path, or "state dict"
    config: dict | None = None  # our run config, or a Hugging Face config.json
    extra: dict = field(default_factory=dict)  # ours: what else describes the model ("target", "num_classes")


# ---------------------------------------------------------------- renaming


def rename(key: str, to_hf: bool) -> str:
    """One tensor name, ours -> Hugging Face (`to_hf`) or back; names without a counterpart stay."""
    src, dst = (0, 1) if to_hf else (1, 0)
    for module in HF_MODULES:
        if key.startswith(module[src]):
            key = module[dst] + key[len(module[src]) :]
            if module[0].endswith("blocks."):
                index, rest = key[len(module[dst]) :].split(".", 1)
                for inner in HF_BLOCK:
                    if rest.startswith(inner[src]):
                        return f"{module[dst]}{index}.{inner[dst]}{rest[len(inner[src]) :]}"
            return key
    return key


def _split_qkv(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key.endswith(".attention.attention.qkv.weight"):
            base = key[: -len("qkv.weight")]
            for name, part in zip(("query", "key", "value"), value.chunk(3)):
                out[f"{base}{name}.weight"] = part
        else:
            out[key] = value
    return out


def _merge_qkv(state: dict, name: str) -> dict:
    out = {}
    for key, value in state.items():
        if key.endswith(".attention.attention.query.weight"):
            base = key[: -len("query.weight")]
            parts = [f"{base}{n}.weight" for n in ("query", "key", "value")]
            missing = [p for p in parts if p not in state]
            if missing:
                raise CheckpointError(f"{name}: has {key} but not {', '.join(missing)}")
            out[f"{base}qkv.weight"] = torch.cat([state[p] for p in parts])
        elif not key.endswith((".attention.attention.key.weight", ".attention.attention.value.weight")):
            out[key] = value
    return out


def from_hf(state: dict, name: str = "state dict") -> dict:
    """Hugging Face VideoMAE tensors -> ours (any of its three model classes)."""
    bare = ("embeddings.", "encoder.layer.", "layernorm.")  # VideoMAEModel saved on its own
    if any(k.startswith(bare[:2]) for k in state):
        state = {("videomae." + k if k.startswith(bare) else k): v for k, v in state.items()}
    # transformers >= 5 names the biases query.bias / value.bias; the Hub's files say q_bias / v_bias
    state = {
        k.replace(".attention.query.bias", ".attention.q_bias").replace(".attention.value.bias", ".attention.v_bias"): v
        for k, v in state.items()
    }
    return {rename(k, to_hf=False): v for k, v in _merge_qkv(state, name).items()}


def to_hf_names(state: dict) -> dict:
    """Our tensors -> Hugging Face's on-disk names (the Hub's `q_bias` / `v_bias`, which transformers 4 and 5 read)."""
    return _split_qkv({rename(k, to_hf=True): v for k, v in state.items()})


def _from_official(state: dict) -> dict:
    """Official fine-tuned names (backbone at the top level or under `backbone.`) -> ours."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            key = "encoder." + key[len("backbone.") :]
        elif key.startswith(BACKBONE):
            key = "encoder." + key
        out[key] = value
    return out


def _drop_fixed_pos_embed(state: dict, name: str) -> dict:
    """A saved sinusoid table is redundant (we compute it); a learned one has no place here."""
    for key in [k for k in state if k.endswith("pos_embed")]:
        table = state[key]
        if table.dim() != 3 or not torch.allclose(
            table.float(), sincos_table(table.shape[1], table.shape[2]), atol=1e-4
        ):
            raise CheckpointError(
                f"{name}: {key} {tuple(table.shape)} is a learned position embedding; "
                f"motionmae models use VideoMAE's fixed sinusoid table"
            )
        del state[key]
    return state


# ---------------------------------------------------------------- reading


def _read_hf_folder(folder: Path) -> tuple[dict, dict | None]:
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    for weights in HF_WEIGHT_FILES:
        if (folder / weights).is_file():
            return load(folder / weights), config
        index = folder / f"{weights}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {k: v for shard in shards for k, v in load(folder / shard).items()}, config
    raise CheckpointError(f"{folder}: no {' or '.join(HF_WEIGHT_FILES)} (not a Hugging Face model folder)")


def _tensors(obj, name: str) -> dict:
    """The state dict inside a checkpoint object: itself, or under "model" / "module" / "state_dict"."""
    for key in ("model", "module", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(
            f"{name}: holds no state dict of tensors (looked at the top level and under "
            f"'model', 'module', 'state_dict')"
        )
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def read_checkpoint(source) -> Checkpoint:
    """Read any supported layout from a path, a Hugging Face folder, or a loaded object; rename to ours.

    Files are read without running code from them (`checkpoints.load`). A `Checkpoint` passes through.
    """
    if isinstance(source, Checkpoint):
        return source
    config, extra = None, {}
    if isinstance(source, (str, Path)):
        name, path = str(source), Path(source)
        if path.is_dir():
            obj, config = _read_hf_folder(path)
        elif path.is_file():
            obj = load(path)
        else:
            raise CheckpointError(f"{path}: no such checkpoint file or folder")
    else:
        name, obj = "state dict", source
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and isinstance(obj.get("model"), dict):
        config = obj["config"]
        extra = {k: obj[k] for k in ("target", "num_classes") if k in obj}
    state = _tensors(obj, name)

    if any(k.startswith(("videomae.", "embeddings.patch_embeddings.")) for k in state):
        kind = (
            "VideoMAEForPreTraining"
            if any(k.startswith("decoder.") for k in state)
            else "VideoMAEForVideoClassification"
            if "classifier.weight" in state
            else "VideoMAEModel"
        )
        return Checkpoint(
            _drop_fixed_pos_embed(from_hf(state, name), name), f"Hugging Face {kind}", name, config, extra
        )
    state = _drop_fixed_pos_embed(_from_official(state), name)
    if config is not None and "model" in config:
        layout = "motionmae checkpoint"
    elif any(k.startswith("decoder.0.") for k in state):
        layout = "MME pretraining (list of decoders)"
    elif any(k.startswith("decoder.") for k in state):
        layout = "VideoMAE/MME pretraining"
    elif "head.weight" in state:
        layout = "VideoMAE/MME fine-tuned"
    else:
        layout = "VideoMAE encoder"
    return Checkpoint(state, layout, name, config, extra)


# ---------------------------------------------------------------- loading into our models


def _encoder(model: nn.Module) -> VisionTransformer:
    """`model` itself when it is a `VisionTransformer`, else its `encoder`."""
    encoder = model if isinstance(model, VisionTransformer) else model.encoder
    if not isinstance(encoder, VisionTransformer):
        raise TypeError(f"{type(model).__name__} has no VisionTransformer encoder")
    return encoder


def _pixels(encoder: VisionTransformer) -> int:
    """Pixel values in one token's tubelet: channels x t x p x p (a pixel target's outputs per token)."""
    return encoder.patch_embed.proj.in_channels * encoder.tubelet * encoder.patch**2


def load_pretrained(source, model: nn.Module, encoder_only: bool = False) -> Loaded:
    """Load a checkpoint of any supported layout into a `VisionTransformer`, `PretrainModel` or `VideoClassifier`.

    A `VisionTransformer` takes the checkpoint's encoder. A `VideoClassifier` takes the whole of a
    fine-tuned checkpoint, or only the encoder of a pretraining one (`fc_norm` and `head` stay as
    initialized, as VideoMAE's fine-tuning does). A `PretrainModel` takes a whole pretraining
    checkpoint. `encoder_only=True` loads just the encoder (e.g. a classifier of other classes).
    An encoder without final norm drops the checkpoint's `norm`. Anything that does not fit
    (another size, patch, tubelet, target or class count) raises one `CheckpointError` listing
    the tensors that do not fit. `source`: anything `read_checkpoint` takes, or its result.
    """
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    encoder = _encoder(model)
    backbone = {k[len("encoder.") :]: v for k, v in ckpt.state.items() if k.startswith("encoder.")}
    rest = {k: v for k, v in ckpt.state.items() if not k.startswith("encoder.")}
    ignored = []
    if isinstance(encoder.norm, nn.Identity):
        ignored = [f"encoder.{k}" for k in backbone if k.startswith("norm.")]
        backbone = {k: v for k, v in backbone.items() if not k.startswith("norm.")}

    whole = False
    if isinstance(model, PretrainModel) and not encoder_only:
        if not any(k.startswith("decoder.blocks.") or k == "decoder.head.weight" for k in rest):
            hint = (
                "its decoders are MME's MLP heads, which have no counterpart here"
                if ckpt.layout.startswith("MME")
                else "it has no pretraining decoder"
            )
            raise CheckpointError(
                f"{ckpt.name} ({ckpt.layout}) does not fit a PretrainModel: {hint}; "
                f"load its encoder only (encoder_only=True) to train a new decoder"
            )
        whole = True
    elif isinstance(model, VideoClassifier) and not encoder_only:
        whole = "head.weight" in rest

    source_text = f"{ckpt.name} ({ckpt.layout})"
    try:
        if whole:
            load_state_dict_strict(model, {**{f"encoder.{k}": v for k, v in backbone.items()}, **rest}, source_text)
        else:
            load_state_dict_strict(encoder, backbone, f"{source_text}, encoder part")
    except CheckpointError as err:
        own = {f"encoder.{k}": v for k, v in model.state_dict().items()} if encoder is model else model.state_dict()
        hint = (
            "; to start a new head on this encoder, load the encoder only (encoder_only=True)"
            if whole and isinstance(model, VideoClassifier)
            else ""
        )
        raise CheckpointError(f"{err}. Checkpoint: {summary(ckpt.state)}; model: {summary(own)}{hint}") from None
    if whole:
        return Loaded(ckpt.layout, [], ignored)
    initialized = [] if encoder is model else [k for k in model.state_dict() if not k.startswith("encoder.")]
    return Loaded(ckpt.layout, initialized, ignored + list(rest))


def _blocks(state: dict, prefix: str) -> int:
    """Number of transformer blocks under `prefix` ("encoder." or "decoder.")."""
    return len({k.split(".")[2] for k in state if k.startswith(f"{prefix}blocks.")})


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(state: dict) -> str:
    """What a state dict in our names holds, e.g. "encoder 192 wide, 12 blocks, tubelets 2x16x16; 7 classes"."""
    parts = []
    if "encoder.patch_embed.proj.weight" in state:
        dim, _, t, p, _ = state["encoder.patch_embed.proj.weight"].shape
        parts.append(f"encoder {dim} wide, {_plural(_blocks(state, 'encoder.'), 'block')}, tubelets {t}x{p}x{p}")
    if "decoder.head.weight" in state:
        outputs, dim = state["decoder.head.weight"].shape
        parts.append(f"decoder {dim} wide, {_plural(_blocks(state, 'decoder.'), 'block')}, {outputs} outputs per token")
    if "head.weight" in state:
        parts.append(f"{state['head.weight'].shape[0]} classes")
    return "; ".join(parts) or "no encoder"


def model_from_checkpoint(source, frames: int = 16, img_size: int = 224) -> tuple[nn.Module, Loaded]:
    """Build the model a checkpoint describes (pretraining, classifier or encoder) and load it.

    Width and depth come from the tensors, the size name from `SIZES`; frames and crop size from the
    checkpoint's config when it has one (ours or Hugging Face's), else from the arguments (the
    fixed position table depends on them, the weights do not). `source`: anything `read_checkpoint` takes.
    """
    ckpt = read_checkpoint(source)
    s, config = ckpt.state, ckpt.config or {}
    if "encoder.patch_embed.proj.weight" not in s:
        raise CheckpointError(f"{ckpt.name} ({ckpt.layout}): no patch embedding, not a video ViT checkpoint")
    dim, _, tubelet, patch, _ = s["encoder.patch_embed.proj.weight"].shape
    depth = _blocks(s, "encoder.")
    size = next((n for n, spec in SIZES.items() if (spec.dim, spec.depth) == (dim, depth)), None)
    if size is None:
        known = ", ".join(f"{n} ({spec.dim}x{spec.depth})" for n, spec in SIZES.items())
        raise CheckpointError(f"{ckpt.name}: width {dim} and depth {depth} match no model size ({known})")
    if "model" in config:  # ours
        frames, img_size = config["data"]["frames"], config["data"]["size"]
    elif "num_frames" in config:  # Hugging Face
        frames, img_size = config["num_frames"], config["image_size"]

    part_heads = "decoder.blocks.0.norm1.weight" in s and "decoder.head.weight" not in s  # ours, `model.head: mlp`
    model: nn.Module
    if ckpt.layout.startswith("MME") or part_heads or not any(k.startswith(("decoder.", "head.")) for k in s):
        model = VisionTransformer(size, frames, img_size, tubelet, patch, final_norm="encoder.norm.weight" in s)
    elif "head.weight" in s:
        model = VideoClassifier(s["head.weight"].shape[0], size, frames, img_size, tubelet, patch)
    else:
        decoder_dim = s["encoder_to_decoder.weight"].shape[0]
        heads = config.get("decoder_num_attention_heads") or config.get("model", {}).get("decoder_heads")
        model = PretrainModel(
            s["decoder.head.weight"].shape[0],
            size,
            frames,
            img_size,
            tubelet,
            patch,
            decoder_depth=_blocks(s, "decoder."),
            decoder_dim=decoder_dim,
            decoder_heads=heads,
        )
    return model, load_pretrained(ckpt, model)


# ---------------------------------------------------------------- export to Hugging Face


def to_hf(model: nn.Module) -> tuple[dict, dict]:
    """(config.json dict, state dict) of the Hugging Face VideoMAE class that computes what `model` does.

    `VideoClassifier` -> VideoMAEForVideoClassification; `PretrainModel` with a pixel target
    (3·t·p·p outputs) -> VideoMAEForPreTraining; any other `PretrainModel` -> VideoMAEModel of its
    encoder (Hugging Face has no class for other targets); `VisionTransformer` -> VideoMAEModel.
    """
    encoder = _encoder(model)
    block = cast(Block, encoder.blocks[0])
    frames, rows, _ = encoder.grid
    config = {
        "model_type": "videomae",
        "image_size": rows * encoder.patch,
        "patch_size": encoder.patch,
        "num_channels": encoder.patch_embed.proj.in_channels,
        "num_frames": frames * encoder.tubelet,
        "tubelet_size": encoder.tubelet,
        "hidden_size": encoder.dim,
        "num_hidden_layers": len(encoder.blocks),
        "num_attention_heads": block.attn.heads,
        "intermediate_size": block.mlp.fc1.out_features,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": block.norm1.eps,
        "qkv_bias": True,
        "norm_pix_loss": True,
        "use_mean_pooling": isinstance(encoder.norm, nn.Identity),
    }
    pixels = _pixels(encoder)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    if isinstance(model, VideoClassifier):
        classes = model.head.out_features
        config.update(
            architectures=["VideoMAEForVideoClassification"],
            id2label={str(i): f"LABEL_{i}" for i in range(classes)},
            label2id={f"LABEL_{i}": i for i in range(classes)},
        )
        state = model.state_dict()
    elif isinstance(model, PretrainModel) and model.decoder.head.out_features == pixels:
        decoder_block = cast(Block, model.decoder.blocks[0])
        config.update(
            architectures=["VideoMAEForPreTraining"],
            decoder_hidden_size=model.mask_token.shape[-1],
            decoder_num_hidden_layers=len(model.decoder.blocks),
            decoder_num_attention_heads=decoder_block.attn.heads,
            decoder_intermediate_size=decoder_block.mlp.fc1.out_features,
        )
        state = model.state_dict()
    else:
        config["architectures"] = ["VideoMAEModel"]
    hf = to_hf_names(state)
    if config["architectures"] == ["VideoMAEModel"]:
        hf = {k[len("videomae.") :]: v for k, v in hf.items()}
    return config, {k: v.detach().cpu().contiguous().clone() for k, v in hf.items()}


def export_hf(model: nn.Module, out_dir) -> dict:
    """Write a folder that `transformers` loads with `from_pretrained`: config.json and model.safetensors.
    Returns the config written."""
    config, state = to_hf(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return config


def save_motionmae(
    model: nn.Module, path, source: str, recorded: Checkpoint | None = None, safetensors: bool = False
) -> Path:
    """Save a (converted) model as our checkpoint: {"model" (encoder under `encoder.`), "config", "source", ...},
    with torch.save or, `safetensors`, as a .safetensors file (`checkpoints.save_safetensors`).

    When the model came from one of our checkpoints (`recorded`), its config, target and class count
    are kept. Otherwise "config" is a pretraining config (or, for a classifier, a fine-tuning config)
    whose model and data sections describe the network, so `model_from_checkpoint` rebuilds it as it was.
    """
    save = save_safetensors if safetensors else atomic_save
    encoder = _encoder(model)
    state = {f"encoder.{k}": v for k, v in model.state_dict().items()} if encoder is model else model.state_dict()
    if recorded is not None and recorded.layout == "motionmae checkpoint":
        return save({"model": state, "config": recorded.config, "source": source, **recorded.extra}, path)
    extra: dict = {}
    config: Config | FinetuneConfig
    if isinstance(model, VideoClassifier):
        config = FinetuneConfig()
        config.data.num_classes = extra["num_classes"] = model.head.out_features
    else:
        config = Config()
        if isinstance(model, PretrainModel):
            config.model.decoder_depth = len(model.decoder.blocks)
            config.model.decoder_dim = model.mask_token.shape[-1]
            config.model.decoder_heads = cast(Block, model.decoder.blocks[0]).attn.heads
            dim = model.decoder.head.out_features
            extra["target"] = {"name": "pixel" if dim == _pixels(encoder) else "unknown", "dim": dim}
    config.model.size, config.model.tubelet, config.model.patch = encoder.size, encoder.tubelet, encoder.patch
    config.data.frames, config.data.size = encoder.grid[0] * encoder.tubelet, encoder.grid[1] * encoder.patch
    return save({"model": state, "config": config.to_dict(), "source": source, **extra}, path)
