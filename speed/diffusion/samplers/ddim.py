"""DDIM sampling (Song et al. 2021, eq. 12) on DDIM's strided timesteps.

x_{t'} = sqrt(abar_{t'}) x0_hat + sqrt(1 - abar_{t'} - sigma^2) eps_hat + sigma z with
sigma = eta sqrt((1 - abar_{t'}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t'}), t' the next (smaller)
kept timestep. eta = 0 is the deterministic DDIM (the Euler step of the probability-flow ODE in
the variables x / sqrt(abar), sqrt(1 / abar - 1)); eta = 1 is DDPM-like.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch

from speed.diffusion.samplers.common import AtLeast, follow, stride_spacing


@torch.no_grad()
def ddim_sample(
    diffusion,
    model,
    noise: torch.Tensor,
    num_steps: int,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    eta: Annotated[float, AtLeast(0.0)] = 0.0,
    clip_denoised: bool = False,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Sample x_0 [like noise] from noise x_T [N, C, ...] in `num_steps` DDIM steps.

    The timesteps are 0, k, 2k, ... for the integer stride k giving exactly `num_steps` of them
    (guided-diffusion's "ddimN"), or evenly spaced ones when no such stride exists.
    Args:
        eta: stochasticity, 0 (deterministic) to 1; noise comes from `generator`.
        clip_denoised, callback: as in `ddpm_sample`.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    spaced = stride_spacing(diffusion, num_steps)
    outputs = spaced.ddim_sample_loop_progressive(
        model,
        noise.shape,
        noise=noise,
        clip_denoised=clip_denoised,
        model_kwargs=model_kwargs,
        progress=progress,
        eta=eta,
        generator=generator,
    )
    return follow(spaced, outputs, callback)


def euler_sample(
    diffusion,
    model,
    noise: torch.Tensor,
    num_steps: int,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    clip_denoised: bool = False,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0), i.e. Euler steps of the probability-flow ODE."""
    return ddim_sample(
        diffusion,
        model,
        noise,
        num_steps,
        model_kwargs,
        generator,
        progress,
        eta=0.0,
        clip_denoised=clip_denoised,
        callback=callback,
    )
