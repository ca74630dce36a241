"""Video ViT: encoder on visible tokens, light decoder with mask tokens, classifier.

Parameter names follow the official VideoMAE layout so its checkpoints load
as they are: `patch_embed.proj` (Conv3d tubelet embedding), `blocks.i.attn.qkv`
without bias plus separate `q_bias` / `v_bias`, `encoder_to_decoder`,
`mask_token`, `decoder.head`; the classifier has `fc_norm` and `head`.

Shapes: video `(B, 3, T, H, W)` float, normalized (`normalize_video`); tokens `(B, N, D)` with
N = T/t · H/p · W/p in VideoMAE order (time-major, then rows, then columns);
mask bool `(B, N)`, True = masked, the same count in every sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from motionmae.errors import UsageError
from motionmae.motion.targets import IMAGENET_MEAN as MEAN
from motionmae.motion.targets import IMAGENET_STD as STD


@dataclass(frozen=True)
class ViTSize:
    dim: int
    depth: int
    heads: int
    decoder_dim: int  # VideoMAE's decoder width for this encoder
    decoder_heads: int


SIZES = {
    "micro": ViTSize(128, 4, 4, 128, 4),  # not VideoMAE's: the CPU demo's 0.8 M-parameter encoder
    "tiny": ViTSize(192, 12, 3, 96, 3),
    "small": ViTSize(384, 12, 6, 192, 3),
    "base": ViTSize(768, 12, 12, 384, 6),
    "large": ViTSize(1024, 24, 16, 512, 8),
}


def normalize_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W), ImageNet-normalized."""
    mean = torch.tensor(MEAN, device=frames.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=frames.device).view(1, 3, 1, 1, 1)
    return frames.permute(0, 4, 1, 2, 3).float().mul_(1 / (255.0 * std)).sub_(mean / std)  # two passes, not four


def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D sinusoid table over token index: float32 (1, num_positions, dim)."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angles = position / torch.pow(10000.0, exponent)[None]
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float()[None]


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D/heads)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Tubelet embedding: (B, 3, T, H, W) -> (B, N, D) with a Conv3d of kernel = stride = (t, p, p).

    Given a mask (B, N), only the visible tubelets are embedded: their pixels are
    gathered and multiplied by the same weights, (B, N_visible, D). Under VideoMAE's
    90 % masking this skips nine tenths of the embedding's work, forward and backward.
    """

    def __init__(self, dim: int, tubelet: int, patch: int, channels: int = 3):
        super().__init__()
        self.proj = nn.Conv3d(channels, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x, mask=None):
        if mask is None:
            return self.proj(x).flatten(2).transpose(1, 2)
        B, C, T, H, W = x.shape
        t, p = self.proj.kernel_size[:2]
        grid = (T // t, H // p, W // p)
        tubelets = x.reshape(B, C, grid[0], t, grid[1], p, grid[2], p).permute(0, 2, 4, 6, 1, 3, 5, 7)  # a view
        batch, token = (~mask).nonzero(as_tuple=True)  # row-major: each sample's visible tokens in order
        index = (batch, *torch.unravel_index(token, grid))
        pixels = tubelets[index]  # (B * N_visible, C, t, p, p)
        return F.linear(pixels.reshape(B, -1, C * t * p * p), self.proj.weight.flatten(1), self.proj.bias)


def token_grid(frames: int, size: int, tubelet: int = 2, patch: int = 16) -> tuple[int, int, int]:
    """(T', Hp, Wp) token grid of a square clip."""
    for value, unit, name in ((frames, tubelet, "frames"), (size, patch, "size")):
        if value % unit:
            raise UsageError(f"{name}={value} is not a multiple of {unit}")
    return frames // tubelet, size // patch, size // patch


def init_weights(module: nn.Module):
    """Xavier-uniform linears, zero biases, unit LayerNorms (VideoMAE's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(nn.Module):
    """Video ViT backbone. `forward(video, mask)` encodes the visible tokens only.

    Returns (B, N_visible, D), or (B, N, D) without a mask.
    """

    def __init__(
        self,
        size: str = "base",
        frames: int = 16,
        img_size: int = 224,
        tubelet: int = 2,
        patch: int = 16,
        drop_path: float = 0.0,
        final_norm: bool = True,
    ):
        super().__init__()
        spec = SIZES[size]
        self.size, self.dim, self.tubelet, self.patch = size, spec.dim, tubelet, patch
        self.grid = token_grid(frames, img_size, tubelet, patch)
        self.num_tokens = math.prod(self.grid)
        self.patch_embed = PatchEmbed(spec.dim, tubelet, patch)
        self.register_buffer("pos_embed", sincos_table(self.num_tokens, spec.dim), persistent=False)
        rates = torch.linspace(0, drop_path, spec.depth).tolist()
        self.blocks = nn.ModuleList(Block(spec.dim, spec.heads, drop_path=r) for r in rates)
        self.norm = nn.LayerNorm(spec.dim, eps=1e-6) if final_norm else nn.Identity()
        init_weights(self)

    def forward(self, video, mask=None):
        pos = self.pos_embed.to(video.dtype)
        if mask is not None:
            pos = pos.expand(video.shape[0], -1, -1)[~mask].reshape(video.shape[0], -1, self.dim)
        x = self.patch_embed(video, mask) + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


ACTIVATIONS = {"identity": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class PartHeads(nn.Module):
    """One MLP head per target part, outputs concatenated in part order (the official MME
    release's heads: Linear(dim, hidden), GELU, Linear(hidden, part), then an activation).

    parts: name -> number of outputs, in the target's order; activations: name -> "identity"
    (default) | "tanh" | "sigmoid".
    """

    def __init__(self, dim: int, parts: dict[str, int], hidden: int = 512, activations: dict | None = None):
        super().__init__()
        activations = activations or {}
        unknown = set(activations) - set(parts)
        if unknown:
            raise UsageError(
                f"head activation for unknown target part(s) {', '.join(sorted(unknown))} (parts: {', '.join(parts)})"
            )
        bad = {a for a in activations.values() if a not in ACTIVATIONS}
        if bad:
            raise UsageError(f"head activation must be one of {', '.join(ACTIVATIONS)}, got {', '.join(sorted(bad))}")
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.Linear(dim, hidden),
                    nn.GELU(),
                    nn.Linear(hidden, size),
                    ACTIVATIONS[activations.get(name, "identity")](),
                )
                for name, size in parts.items()
            }
        )

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads.values()], dim=-1)


class Decoder(nn.Module):
    """Light transformer over visible tokens + mask tokens; predicts targets of masked tokens.

    The head is one linear layer over all `out_dim` outputs, or `PartHeads` when `parts`
    (name -> number of outputs, summing to `out_dim`) is given.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        out_dim: int,
        parts: dict[str, int] | None = None,
        head_hidden: int = 512,
        activations: dict | None = None,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if parts is not None and sum(parts.values()) != out_dim:
            raise ValueError(f"target parts {parts} do not add up to {out_dim} outputs")
        self.head = nn.Linear(dim, out_dim) if parts is None else PartHeads(dim, parts, head_hidden, activations)

    def forward(self, x, num_masked: int):
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -num_masked:]))


class PretrainModel(nn.Module):
    """Masked video autoencoder: `forward(video, mask) -> (B, N_masked, target_dim)`.

    Predictions are in the order of the masked tokens, i.e. `target[mask]`. `head_parts`
    (target part -> outputs) gives the decoder one MLP head per part (`PartHeads`, with
    `head_hidden` and `head_activations`); None: one linear head.
    """

    def __init__(
        self,
        target_dim: int,
        size: str = "base",
        frames: int = 16,
        img_size: int = 224,
        tubelet: int = 2,
        patch: int = 16,
        decoder_depth: int = 4,
        decoder_dim: int | None = None,
        decoder_heads: int | None = None,
        drop_path: float = 0.0,
        head_parts: dict[str, int] | None = None,
        head_hidden: int = 512,
        head_activations: dict | None = None,
    ):
        super().__init__()
        spec = SIZES[size]
        decoder_dim = decoder_dim or spec.decoder_dim
        decoder_heads = decoder_heads or spec.decoder_heads
        self.encoder = VisionTransformer(size, frames, img_size, tubelet, patch, drop_path)
        self.encoder_to_decoder = nn.Linear(spec.dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("decoder_pos_embed", sincos_table(self.encoder.num_tokens, decoder_dim), persistent=False)
        self.decoder = Decoder(
            decoder_dim, decoder_depth, decoder_heads, target_dim, head_parts, head_hidden, head_activations
        )
        init_weights(self.encoder_to_decoder)
        init_weights(self.decoder)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, video, mask):
        B = video.shape[0]
        visible = self.encoder_to_decoder(self.encoder(video, mask))
        pos = self.decoder_pos_embed.to(visible.dtype).expand(B, -1, -1)
        pos_visible = pos[~mask].reshape(B, -1, pos.shape[-1])
        pos_masked = pos[mask].reshape(B, -1, pos.shape[-1])
        x = torch.cat([visible + pos_visible, self.mask_token.to(visible.dtype) + pos_masked], dim=1)
        return self.decoder(x, pos_masked.shape[1])


class VideoClassifier(nn.Module):
    """Encoder + mean pool + fc_norm + linear head (VideoMAE's fine-tuning model): logits (B, classes)."""

    def __init__(
        self,
        num_classes: int,
        size: str = "base",
        frames: int = 16,
        img_size: int = 224,
        tubelet: int = 2,
        patch: int = 16,
        drop_path: float = 0.0,
        head_dropout: float = 0.0,
    ):
        super().__init__()
        self.encoder = VisionTransformer(size, frames, img_size, tubelet, patch, drop_path, final_norm=False)
        self.fc_norm = nn.LayerNorm(self.encoder.dim, eps=1e-6)
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.encoder.dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, video):
        """Mean-pooled, normalized clip features: (B, D)."""
        return self.fc_norm(self.encoder(video).mean(dim=1))

    def forward(self, video):
        return self.head(self.head_dropout(self.features(video)))
