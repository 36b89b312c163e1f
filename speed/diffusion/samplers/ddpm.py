"""Ancestral DDPM sampling (Ho et al. 2020, Alg. 2) on evenly respaced timesteps.

x_{t-1} = mu_theta(x_t, t) + sigma_t z, z ~ N(0, I) (no noise at the last step), with the variance
the diffusion prescribes (fixed small, fixed large or learned), as DiT samples with 250 steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from speed.diffusion.samplers.common import even_spacing, follow


@torch.no_grad()
def ddpm_sample(
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
    """Sample x_0 [like noise] from noise x_T [N, C, ...] in `num_steps` ancestral steps.

    The timesteps are `num_steps` evenly spaced original timesteps (guided-diffusion's "N").
    Args:
        model: called as model(x, t_original, **model_kwargs).
        generator: source of the per-step noise (on noise's device).
        clip_denoised: clamp x_0 predictions to [-1, 1] (pixel space).
        callback: fn(step_index, t, x, pred_xstart) after each step (t the original timestep).
    """
    spaced = even_spacing(diffusion, num_steps)
    outputs = spaced.p_sample_loop_progressive(
        model,
        noise.shape,
        noise=noise,
        clip_denoised=clip_denoised,
        model_kwargs=model_kwargs,
        progress=progress,
        generator=generator,
    )
    return follow(spaced, outputs, callback)
