"""Frozen image encoders whose patch features REPA aligns a backbone's tokens to.

One interface: `encoder(images) -> tokens [N, L, D]` for images [N, C, H, W] in [-1, 1] (the
data's range), with `feature_dim` (D) and `name`; no gradients, eval mode, weights from a local
path only (nothing is downloaded).

- `TimmEncoder`: any timm vision transformer (DINOv2 ViT-B/14 = `vit_base_patch14_dinov2`, as in
  REPA) built with `pretrained=False` and loaded from a local state-dict file; images are resized
  to `resolution` (bicubic, REPA's 224 for 256-pixel images), normalised with ImageNet's mean and
  std, and the prefix tokens (class, registers) are dropped.
- `DomainEncoder`: the demo's committed animal-mnist classifier
  (`benchmarks/assets/domain_classifier.pt`), its feature map after the second block: a 7 x 7
  grid of 64-d features on 28 x 28 images, one per token of a DiT with patch 4.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speed.errors import MissingFileError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _existing(path: str | os.PathLike | None, key: str) -> Path:
    if not path or not Path(path).is_file():
        raise MissingFileError(f"{key}: no encoder weights at {path}; set it to a local file")
    return Path(path)


class TimmEncoder(nn.Module):
    """A timm ViT loaded from a local file (module docstring).

    Args:
        model_name: timm architecture, e.g. "vit_base_patch14_dinov2".
        path: a state dict (`torch.save(model.state_dict())` or a safetensors file).
        resolution: input side in pixels (a multiple of the patch size).
        model_kwargs: further `timm.create_model` arguments (e.g. img_size, depth for tests).
    """

    def __init__(self, model_name: str, path: str, resolution: int = 224, **model_kwargs):
        super().__init__()
        import timm

        weights = _existing(path, "repa.encoder.path")
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **model_kwargs)
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        self.model.load_state_dict(state)
        self.model.eval().requires_grad_(False)
        self.resolution = int(resolution)
        self.feature_dim = int(self.model.embed_dim)
        self.name = f"timm {model_name} ({weights.name})"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1) / 2  # [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        tokens = self.model.forward_features(x)  # [N, prefix + L, D]
        return tokens[:, self.model.num_prefix_tokens :]


class DomainEncoder(nn.Module):
    """The animal-mnist domain classifier's feature map after `blocks` conv blocks, as tokens.

    Args:
        path: the classifier file (`evaluations.domain_classifier`).
        blocks: conv blocks to keep (each halves the side: 2 gives 7 x 7 x 64 on 28 x 28).
    """

    def __init__(self, path: str = "benchmarks/assets/domain_classifier.pt", blocks: int = 2):
        super().__init__()
        from evaluations.domain_classifier import DomainFeatures

        features = DomainFeatures(_existing(path, "repa.encoder.path"))
        widths = features.meta["widths"]
        if not 1 <= blocks <= len(widths):
            raise ValueError(f"blocks must lie in 1..{len(widths)}, got {blocks}")
        self.trunk = features.model.trunk[: 7 * blocks].eval().requires_grad_(False)
        self.image_size, self.in_channels = (
            features.meta["image_size"],
            features.meta["in_channels"],
        )
        self.feature_dim = int(widths[blocks - 1])
        self.name = f"domain classifier, block {blocks} ({Path(path).name})"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[1] != self.in_channels:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        return self.trunk(x).flatten(2).transpose(1, 2)  # [N, h w, C]
