"""The Stable Diffusion VAE (diffusers' AutoencoderKL) as a frozen latent-space autoencoder.

Latent diffusion (Rombach et al. 2022; DiT, Peebles & Xie 2023) trains on z = scale * E(x), where
E(x) is the VAE posterior (a sample or its mean) and `scale` = 0.18215 brings the latents of
stabilityai/sd-vae-ft-ema to roughly unit variance. A 256x256x3 image becomes a 32x32x4 latent.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SD_VAE_SCALE = 0.18215  # latent multiplier of the SD VAE (LDM / DiT)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class SDVAE(nn.Module):
    """A frozen AutoencoderKL loaded from a local diffusers folder (no download).

    Args:
        path: folder holding `config.json` and the weights, e.g. a local copy of
            stabilityai/sd-vae-ft-ema (config key `autoencoder.path`).
        scale: latent multiplier; encode returns scale * latent, decode divides by it first.
        dtype: weights' dtype for encoding and decoding: float32 | float16 | bfloat16.
        sample_posterior: encode draws z ~ N(mean, std^2) from the posterior (as DiT and
            fast-DiT do) instead of returning its mean.
    """

    def __init__(
        self,
        path: str,
        scale: float = SD_VAE_SCALE,
        dtype: str = "float32",
        sample_posterior: bool = True,
    ):
        super().__init__()
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"autoencoder.path: no VAE folder at {folder} (config.json missing); download "
                "stabilityai/sd-vae-ft-ema (diffusers format) elsewhere and point autoencoder.path "
                "at it"
            )
        if dtype not in DTYPES:
            raise ValueError(f"autoencoder.dtype: unknown '{dtype}'; use one of {sorted(DTYPES)}")
        if scale <= 0:
            raise ValueError(f"autoencoder.scale must be positive, got {scale}")
        from diffusers import AutoencoderKL  # slow import, only needed in latent space

        self.vae = AutoencoderKL.from_pretrained(
            folder, local_files_only=True, low_cpu_mem_usage=False
        ).to(DTYPES[dtype])
        self.vae.requires_grad_(False)
        self.scale = float(scale)
        self.sample_posterior = sample_posterior
        self.latent_channels = int(self.vae.config.latent_channels)
        self.downsample = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.name = f"sd-vae:{folder.name}"
        self.eval()

    def train(self, mode: bool = True) -> SDVAE:
        """Always stays in eval mode: the VAE is frozen."""
        return super().train(False)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] -> scaled latents [N, latent_channels, H/d, W/d].

        `generator` drives the posterior sample: None (torch's global RNG), one torch.Generator,
        or a list of N generators, one per image (so each image's latent is reproducible on its
        own, whatever batch it is in). Returned in x's dtype.
        """
        posterior = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        z = posterior.mean
        if self.sample_posterior:
            z = z + posterior.std * _standard_normal(z.shape, generator, z.device, z.dtype)
        return (z * self.scale).to(x.dtype)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, latent_channels, h, w] -> images [N, 3, h*d, w*d], about [-1, 1]
        (not clipped), in z's dtype."""
        images = self.vae.decode(z.to(self.vae.dtype) / self.scale).sample
        return images.to(z.dtype)


def _standard_normal(shape, generator, device, dtype) -> torch.Tensor:
    """N(0, 1) noise of `shape`, drawn per item from a list of generators or from one generator
    (on the generator's device, then moved)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"encode: got {len(generator)} generators for {shape[0]} images")
        noise = torch.stack(
            [torch.randn(shape[1:], generator=g, device=g.device) for g in generator]
        )
    elif generator is not None:
        noise = torch.randn(shape, generator=generator, device=generator.device)
    else:
        noise = torch.randn(shape, device=device)
    return noise.to(device, dtype)
