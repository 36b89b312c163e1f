"""Euler ancestral sampling (the ancestral Euler sampler of Karras et al. 2022's k-diffusion code,
diffusers' EulerAncestralDiscreteScheduler) on evenly spaced timesteps.

In the variance-exploding variables x~ = x / sqrt(abar_t), s_t = sqrt((1 - abar_t) / abar_t),
with the denoiser D = x0_hat(x, t) and eps_hat = (x~ - D) / s_t, a step from s = s_t to s' = s_{t'}
(the next, smaller kept timestep) is
    s_up = s' sqrt(1 - s'^2 / s^2),   s_down = sqrt(s'^2 - s_up^2),
    x~' = x~ + (s_down - s) eps_hat + s_up z,   z ~ N(0, I),
and the last step (s' = 0) gives x~' = D. Back in x = sqrt(abar) x~ this is exactly the DDIM step
with eta = 1 (Song et al. 2021, eq. 12): sqrt(abar_{t'}) s_up is DDIM's sigma, and
    sqrt(abar_{t'}) (x~ + (s_down - s) eps_hat)
        = sqrt(abar_{t'}) D + sqrt(1 - abar_{t'} - sigma^2) eps_hat.
So the sampler runs the diffusion's DDIM step with eta = 1 on the Euler sampler's grid; what sets
it apart from `ddim` with eta = 1 is only the grid (both ends included, not DDIM's stride).
Equals diffusers' EulerAncestralDiscreteScheduler(timestep_spacing="linspace", steps_offset=0) when
that grid is integral (num_steps - 1 divides T - 1), given the same x_T and per-step noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from speed.diffusion.samplers.common import even_spacing, follow


@torch.no_grad()
def euler_ancestral_sample(
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
    """Sample x_0 [like noise] from noise x_T [N, C, ...] in `num_steps` Euler ancestral steps
    (`num_steps` model calls).

    The timesteps are `num_steps` evenly spaced original timesteps, T - 1 and 0 included and rounded
    (guided-diffusion's "N"; diffusers' timestep_spacing="linspace" rounded to integers). One
    N(0, I) draw of noise's shape per step from `generator`, the last step's unused (as diffusers
    draws it). clip_denoised, callback: as in `ddpm_sample`.
    """
    spaced = even_spacing(diffusion, num_steps)
    outputs = spaced.ddim_sample_loop_progressive(
        model,
        noise.shape,
        noise=noise,
        clip_denoised=clip_denoised,
        model_kwargs=model_kwargs,
        progress=progress,
        eta=1.0,
        generator=generator,
    )
    return follow(spaced, outputs, callback)
