"""Building blocks shared by the backbones: sinusoidal embeddings and multi-head attention.

- `timestep_embedding`: the 1-D sinusoid of timesteps used by DiT and guided-diffusion
  ([cos, sin] halves, max_period 10000).
- `sincos_pos_embed_2d`: DiT's fixed 2-D sin-cos position table (MAE's construction).
- `attention`: softmax(q k^T / sqrt(d)) v, through `scaled_dot_product_attention` (flash /
  memory-efficient kernels on GPU) or written out (reference path for tests).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    With half = dim // 2 and f_i = max_period^(-i / half), i = 0..half-1, the embedding of t is
    [cos(t f_0) .. cos(t f_{half-1}), sin(t f_0) .. sin(t f_{half-1})] (one zero appended when
    `dim` is odd).

    Args:
        t: timesteps [N].
    Returns:
        float32 embeddings [N, dim].
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32) / half
    freqs = torch.exp(exponent).to(device=t.device)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def _sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[M, dim] table: [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim/2)), k < dim/2."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """DiT's fixed 2-D sin-cos position embedding, float64 [grid_h * grid_w, dim].

    Token (i, j) (row i, column j; row-major order, as patches are flattened) gets
    [1-D table of the column j, 1-D table of the row i], each of width dim / 2.
    """
    if dim % 4:
        raise ValueError(f"hidden_size must be divisible by 4 for the 2-D sin-cos table, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    return np.concatenate([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], axis=1)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    fused: bool = True,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over the last two axes.

    Args:
        q, k, v: [B, heads, T, d].
        fused: use `F.scaled_dot_product_attention`; False writes the softmax out (in at least
            float32, as guided-diffusion does), which the fused kernels must match.
        bias: optional additive attention bias broadcast to [B, heads, T, T] (MDT's relative
            position bias).
    Returns:
        [B, heads, T, d].
    """
    if bias is not None:
        bias = bias.to(q.dtype)
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    weight = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        weight = weight + bias
    softmax_dtype = torch.promote_types(q.dtype, torch.float32)  # at least float32
    weight = torch.softmax(weight, dim=-1, dtype=softmax_dtype).to(q.dtype)
    return torch.einsum("bhts,bhsd->bhtd", weight, v)
