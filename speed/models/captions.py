"""What every caption-conditioned backbone (PixArt-alpha's DiT, the text UNet) does with a
caption before its own layers, written once: the checks on the caption arguments, the text
transformer it holds when `vocab_size > 0` (token ids in, trained with the model), caption dropout
to a learned null caption (classifier-free guidance's unconditional branch), the padding mask
as an additive attention bias, where an empty caption attends to all its tokens rather than none,
and the caption's mean over its tokens (the pooled text a model may add to its timestep
embedding).
"""

from __future__ import annotations

import torch
from torch import nn

from speed.models.text_transformer import TextTransformer


def check_caption_arguments(caption_channels: int, max_length: int) -> None:
    if caption_channels < 1 or max_length < 1:
        raise ValueError(
            f"need caption_channels >= 1 and max_length >= 1, got {caption_channels}, {max_length}"
        )


def text_transformer(
    vocab_size: int, max_length: int, width: int, depth: int, heads: int
) -> TextTransformer | None:
    """The model-held text transformer over token ids 0..vocab_size-1, or None (vocab_size 0:
    `y` is a frozen encoder's embeddings)."""
    return TextTransformer(vocab_size, max_length, width, depth, heads) if vocab_size else None


def attended(mask: torch.Tensor) -> torch.Tensor:
    """mask [N, L] bool with an empty caption's row (no token) set to all tokens."""
    return mask | ~mask.any(1, keepdim=True)


def padding_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """mask [N, L] bool (True = attend) -> additive bias [N, 1, 1, L] (0 or -inf)."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill(~mask, float("-inf"))[:, None, None, :]


class CaptionConditioned:
    """Mixin for a `ConditionalBackbone` conditioned on captions. The model sets `max_length`,
    `text_encoder` (a `TextTransformer` or None), `class_dropout_prob` (the caption dropout),
    `has_null_label` (caption dropout > 0) and `input_name`, and gives its null caption
    [L, caption_channels] as `null_caption` (a parameter under its own state-dict name)."""

    max_length: int
    text_encoder: nn.Module | None
    input_name: str

    @property
    def null_caption(self) -> torch.Tensor:
        raise NotImplementedError

    def caption(self, y, mask, n: int, force_drop_ids):
        """(caption embeddings [N, L, caption_channels], mask [N, L]) with dropped captions (and
        all of them when y is None) replaced by the null caption, which attends to all L tokens.
        Drops where `force_drop_ids == 1` when given, else each with `class_dropout_prob` in
        training."""
        null = self.null_caption[None].expand(n, -1, -1)
        full = torch.ones(n, self.max_length, dtype=torch.bool, device=null.device)
        if y is None:
            return null, full
        if y.shape[1] != self.max_length:
            raise ValueError(
                f"{self.input_name} expects {self.max_length} caption tokens, got {y.shape[1]}"
            )
        mask = full if mask is None else mask.bool()
        if self.text_encoder is not None:
            y = self.text_encoder(y, attended(mask))
        if force_drop_ids is not None:
            drop = force_drop_ids.to(null.device) == 1
        elif self.training and self.class_dropout_prob > 0:
            drop = torch.rand(n, device=null.device) < self.class_dropout_prob
        else:
            return y, mask
        y = torch.where(drop[:, None, None], null.to(y.dtype), y)
        return y, mask | drop[:, None]

    @staticmethod
    def pooled(caption: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mean of caption [N, L, C] over its attended tokens (mask [N, L], an empty caption
        over all) -> [N, C]."""
        weight = attended(mask).to(caption.dtype)[..., None]  # [N, L, 1]
        return (caption * weight).sum(1) / weight.sum(1)
