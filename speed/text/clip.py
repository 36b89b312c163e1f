"""CLIP's text tower (Radford et al. 2021) as a frozen text encoder: Stable Diffusion (Rombach et
al. 2022) conditions on the last hidden states of ViT-L/14's text transformer, 77 tokens of 768
channels, attending to every token (padding included), which `mask_padding: false` keeps."""

from __future__ import annotations

import torch

from speed.text.base import PretrainedTextEncoder


class CLIPTextEncoder(PretrainedTextEncoder):
    """Frozen CLIP text transformer from `path` (e.g. openai/clip-vit-large-patch14 saved
    locally): ids [N, L] -> last hidden states [N, L, hidden_size].

    Args:
        mask_padding: pass the tokenizer's padding mask on to the model (false: all tokens
            attended, Stable Diffusion's way).
    """

    name = "clip"

    def __init__(
        self,
        path: str | None = None,
        max_length: int = 77,
        dtype: str = "float32",
        mask_padding: bool = False,
    ):
        super().__init__(path, max_length, dtype)
        self.mask_padding = mask_padding

    @staticmethod
    def model_class():
        from transformers import CLIPTextModel

        return CLIPTextModel

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        out = self.encoder(input_ids=ids).last_hidden_state  # CLIP's causal mask hides the padding
        return out.float(), mask if self.mask_padding else torch.ones_like(mask)
