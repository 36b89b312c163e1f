"""A small text transformer trained jointly with the diffusion model (LDM's text-to-image
set-up, Rombach et al. 2022 sec. 4.3: a transformer over the caption's tokens whose outputs the
denoiser cross-attends to), for captions tokenized by `speed.text.ByteTokens`."""

from __future__ import annotations

import torch
from torch import nn


class TextTransformer(nn.Module):
    """Token ids [N, L] -> [N, L, width]: token and learned position embeddings, `depth` pre-norm
    bidirectional transformer layers that ignore padding, a final LayerNorm.

    Args:
        vocab_size: token ids 0..vocab_size-1 (id 0 is padding).
        max_length: tokens L per caption.
        width, depth, num_heads: the transformer's channels, layers and heads.
    """

    def __init__(self, vocab_size: int, max_length: int, width: int = 256, depth: int = 4,
                 num_heads: int = 4):  # fmt: skip
        super().__init__()
        if width % num_heads:
            raise ValueError(f"text width {width} is not divisible by text heads {num_heads}")
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(1, max_length, width))
        layer = nn.TransformerEncoderLayer(
            width, num_heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [N, L] int64, mask [N, L] bool (True = a token) -> [N, L, width]."""
        x = self.token_embedding(ids) + self.position_embedding[:, : ids.shape[1]]
        x = self.layers(x, src_key_padding_mask=~mask)
        return self.norm(x)
