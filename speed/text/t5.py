"""T5 v1.1's encoder as a frozen text encoder: PixArt-alpha (Chen et al. 2023, sec. 2.3) encodes
captions with T5 v1.1 XXL to 120 tokens of 4096 channels, padding masked out."""

from __future__ import annotations

import torch

from speed.text.base import PretrainedTextEncoder


class T5TextEncoder(PretrainedTextEncoder):
    """Frozen T5 encoder from `path` (e.g. google/t5-v1_1-xxl saved locally): ids [N, L] ->
    last hidden states [N, L, d_model] with the tokenizer's padding mask."""

    name = "t5"

    @staticmethod
    def model_class():
        from transformers import T5EncoderModel

        return T5EncoderModel

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        out = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return out.float(), mask
