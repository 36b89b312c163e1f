"""Autoencoders mapping images to the space diffusion runs in: pixels (Identity) or SD-VAE latents.

Both share `encode(x, generator=None)`, `decode(z)`, `latent_channels` (None = the images' own),
`downsample` (pixel side / latent side), `scale` (latent multiplier) and `name`.
"""

from speed.autoencoders.identity import Identity
from speed.autoencoders.sd_vae import SDVAE

__all__ = ["Identity", "SDVAE"]
