"""A tiny Vision Transformer (Dosovitskiy et al. 2021) with pre-norm encoder blocks.

Attention is `nn.MultiheadAttention(batch_first=True)` because torch-pruning has a dedicated
pruner for it; a hand-written q/k/v split would hide the head structure from the tracer.
Tokens are mean-pooled instead of using a class token, which keeps the graph a plain chain.
"""
from __future__ import annotations

import torch
from torch import nn

from dpm_cli.errors import ConfigError


class EncoderBlock(nn.Module):
    """x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width dim * mlp_ratio."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch-embedding conv, learned position embedding, encoder blocks, LN, mean pool, `head`."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, patch_size: int,
                 dim: int, depth: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ConfigError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        if heads < 1 or dim % heads:
            raise ConfigError(f"dim {dim} must be a multiple of heads {heads}")
        self.image_size = image_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        tokens = (image_size // patch_size) ** 2
        # std 0.02 as in ViT/BERT: small enough not to swamp the patch features at start.
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The position table has one row per patch, so the input size is fixed at build time.
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ConfigError(
                f"this transformer was built for {self.image_size}x{self.image_size} input but got "
                f"{x.shape[-2]}x{x.shape[-1]}; build it with image_size={x.shape[-1]}"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, tokens, dim)
        x = self.blocks(x + self.pos_embed)
        return self.head(self.norm(x).mean(dim=1))


def vit_tiny(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, patch_size: int = 4,
             dim: int = 64, depth: int = 2, heads: int = 4, mlp_ratio: int = 4) -> VisionTransformer:
    """Two-block, 64-wide ViT with 4x4 patches (about 0.1M parameters at 32x32)."""
    return VisionTransformer(num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_ratio)
