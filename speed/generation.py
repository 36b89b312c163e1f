"""Turn noise into images: pick a sampler, wrap the model for classifier-free guidance, decode.

Shared by the `train` (periodic grids), `inference` and `sample` phases, so all three draw images
the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from speed.diffusion.samplers import get_sampler
from speed.diffusion.samplers.common import check_num_steps
from speed.errors import ConfigError


@torch.no_grad()
def generate(
    model: nn.Module,
    diffusion,
    autoencoder: nn.Module,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    sampler: str = "ddpm",
    num_steps: int = 250,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    clip_denoised: bool = False,
    eta: float = 0.0,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Sample from `model` starting at `noise` [N, C, h, w]; returns decoded images [N, C', H, W].

    Args:
        labels: class indices [N], or None for an unconditional model.
        guidance_scale: classifier-free guidance scale s (1 = no guidance); with s != 1 the batch is
            doubled ([cond; uncond] with the null label `model.num_classes`) and the model's
            `forward_with_cfg` mixes eps_uncond + s * (eps_cond - eps_uncond).
        eta: DDIM stochasticity (used by the ddim sampler only).
        callback: fn(step_index, t, x, pred_xstart) called every step (e.g. a denoising strip).
    """
    try:  # the config's sampler and num_steps, checked before any work
        sample_fn = get_sampler(sampler)
        check_num_steps(diffusion, num_steps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    options = {"clip_denoised": clip_denoised, "callback": callback}
    if sampler == "ddim":
        options["eta"] = eta
    n = noise.shape[0]
    guided = labels is not None and guidance_scale != 1.0
    if guided:
        null = torch.full_like(labels, model.num_classes)
        noise = torch.cat([noise, noise])
        model_fn = model.forward_with_cfg
        model_kwargs = {"y": torch.cat([labels, null]), "cfg_scale": guidance_scale}
    else:
        model_fn = model
        model_kwargs = {"y": labels}
    latents = sample_fn(
        diffusion,
        model_fn,
        noise,
        num_steps,
        model_kwargs=model_kwargs,
        generator=generator,
        progress=progress,
        **options,
    )
    return autoencoder.decode(latents[:n])
