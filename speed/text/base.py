"""The text-encoder interface, and `Labels`, the conditioning of every model that reads no text.

A text encoder turns captions into what a caption-conditioned backbone attends to:
`tokenize(captions) -> (ids [N, L] int64, mask [N, L] bool)`, then
`forward(ids, mask) -> (embeddings [N, L, dim], mask)`; `condition(captions, device)` does both and
returns the backbone's keyword arguments `{"y": embeddings, "mask": mask}`. A frozen encoder runs
without gradients in the training loop, outside the model, so it is never trained, averaged into
the EMA, sharded or checkpointed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from speed.errors import ConfigError


class TextEncoder(nn.Module):
    """Captions -> token embeddings. Subclasses set `name`, `dim` (embedding width; 0 when the
    model embeds the ids itself), `vocab_size` (ids the model embeds; 0 for frozen encoders) and
    `max_length` (tokens L), and define `tokenize` and `forward`."""

    reads_text = True  # the data must yield captions
    name = "text"
    dim = 0
    vocab_size = 0
    max_length = 0

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def condition(self, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """{"y": embeddings [N, L, dim] (ids [N, L] when `dim` is 0), "mask": [N, L] bool}."""
        ids, mask = self.tokenize(list(captions))
        y, mask = self(ids.to(device), mask.to(device))
        return {"y": y, "mask": mask}

    def model_arguments(self) -> dict[str, int]:
        """The backbone constructor arguments this encoder implies."""
        return {
            "caption_channels": self.dim,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
        }


class ModelTokens(TextEncoder):
    """Token ids the model's own text transformer embeds (`dim` 0): subclasses give
    `token_ids(caption)` (ids >= 1); `tokenize` cuts them to `max_length` and pads with 0, and
    `forward` passes the ids on unchanged."""

    def token_ids(self, caption: str) -> list[int]:
        raise NotImplementedError

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(captions), self.max_length, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens = self.token_ids(caption)[: self.max_length]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return ids, ids != 0

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        return ids, mask


class Labels(nn.Module):
    """No text: the data's class labels (or none, for an unconditional model) go to the model as
    `y` unchanged."""

    reads_text = False
    name = "labels"

    def model_arguments(self) -> dict[str, int]:
        return {}


def local_folder(path: str | None, kind: str) -> Path:
    """`path` as an existing folder, else a ConfigError naming `text_encoder.path`."""
    if not path or not Path(path).is_dir():
        raise ConfigError(
            f"text_encoder.path={path!r} is no folder; download the {kind} weights and tokenizer "
            "(save_pretrained layout) and set text_encoder.path to that folder"
        )
    return Path(path)


class PretrainedTextEncoder(TextEncoder):
    """A frozen `transformers` text model with its tokenizer, both read from one local folder
    (`local_files_only`: nothing is downloaded). Subclasses give `model_class()`
    (the `transformers` class, imported only when used) and `forward(ids, mask)`.

    Args:
        path: the save_pretrained folder holding the model's config, weights and tokenizer.
        max_length: tokens per caption (longer captions are cut, shorter padded).
        dtype: weights' dtype, "float32" or "bfloat16".
    """

    @staticmethod
    def model_class():
        raise NotImplementedError

    def __init__(self, path: str | None = None, max_length: int = 120, dtype: str = "float32"):
        super().__init__()
        from transformers import AutoTokenizer

        if max_length < 1:
            raise ValueError(f"text_encoder.max_length must be >= 1, got {max_length}")
        folder = local_folder(path, self.name)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.encoder = self.model_class().from_pretrained(
            folder, local_files_only=True, dtype=getattr(torch, dtype)
        )
        self.encoder.eval().requires_grad_(False)
        self.max_length = max_length
        self.dim = self.encoder.config.hidden_size  # T5's config maps it to d_model
        # What made a latent cache's stored embeddings (`speed.data.latent_cache`).
        self.identity = f"{self.name} {folder.resolve()} max_length={max_length} {dtype}"

    def train(self, mode: bool = True):
        """Always in eval mode (frozen: no dropout)."""
        return super().train(False)

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            captions,
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"].bool()
