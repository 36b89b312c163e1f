"""CLIP score (Hessel et al. 2021, "CLIPScore", eq. 1 with w = 100): how well images match their
captions, 100 * max(cos(E_image, E_text), 0) averaged over pairs, with a CLIP model read from a
local folder (`local_files_only`: nothing downloads).

torchmetrics' `CLIPScore` accepts only its listed hub names as strings (a local folder path is
refused) or a callable returning (model, processor); with transformers 5 its update fails, as
`get_image_features` no longer returns a tensor. So the embeddings come from `CLIPModel`'s forward
(`image_embeds`, `text_embeds`) here, and the formula is `clip_score`, a pure function of arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from speed.errors import DataError, MissingFileError


def clip_score(image_embeds: np.ndarray, text_embeds: np.ndarray) -> float:
    """100 * mean over rows of max(cos(image_embeds[i], text_embeds[i]), 0); both [N, D]."""
    a, b = np.asarray(image_embeds, np.float64), np.asarray(text_embeds, np.float64)
    if a.ndim != 2 or a.shape != b.shape or not len(a):
        raise DataError(f"CLIP score needs two [N, D] arrays, got {a.shape} and {b.shape}")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(100 * np.maximum(cos, 0).mean())


class ClipEmbedder:
    """CLIP image and text embeddings from a save_pretrained folder (model and processor).

    Args:
        path: the folder (e.g. openai/clip-vit-large-patch14 saved locally).
        device: where the model runs.
    """

    def __init__(self, path: str, device: str | torch.device = "cpu"):
        from pathlib import Path

        from transformers import CLIPModel, CLIPProcessor

        if not Path(path).is_dir():
            raise MissingFileError(
                f"CLIP model folder {path} not found: save a CLIP model and its processor there "
                "(save_pretrained) and pass its path"
            )
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self.processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
        self.device = torch.device(device)

    @torch.no_grad()
    def embed(self, images: np.ndarray, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images [N, H, W, 3] and N captions -> (image, text) embeddings, each [N, D]."""
        inputs = self.processor(
            text=list(captions), images=list(images), return_tensors="pt", padding=True,
            truncation=True,
        )  # fmt: skip
        out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        return out.image_embeds.cpu().numpy(), out.text_embeds.cpu().numpy()
