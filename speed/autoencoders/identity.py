"""The identity autoencoder: diffusion runs directly on pixels."""

from __future__ import annotations

import torch
from torch import nn


class Identity(nn.Module):
    """Pixel space: `encode` and `decode` return their input unchanged.

    Shares the interface of `SDVAE`: `latent_channels` (None = as many as the images have),
    `downsample` (pixel side / latent side) and `scale` (latent multiplier).
    """

    latent_channels = None
    downsample = 1
    scale = 1.0
    name = "identity"

    def __init__(self):  # no options: lets config validation refuse any key under it
        super().__init__()

    def encode(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """[N, C, H, W] images in [-1, 1] -> the same tensor (`generator` is unused)."""
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> the same tensor."""
        return z
