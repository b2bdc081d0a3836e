"""Shared neural-network layers (torch only)."""

from distdiff.nn.blocks import (
    AttentionBlock, CrossAttentionBlock, Downsample, EmbedSequential, ResBlock, Upsample, zero_module,
)
from distdiff.nn.embeddings import TimestepMLP, timestep_embedding
from distdiff.nn.norm import AdaptiveGroupNorm, PixelNorm, group_norm, valid_num_groups

__all__ = [
    "AdaptiveGroupNorm",
    "AttentionBlock",
    "CrossAttentionBlock",
    "Downsample",
    "EmbedSequential",
    "PixelNorm",
    "ResBlock",
    "TimestepMLP",
    "Upsample",
    "group_norm",
    "timestep_embedding",
    "valid_num_groups",
    "zero_module",
]
