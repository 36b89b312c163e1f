"""PLMS sampling: pseudo linear multi-step (Liu et al. 2022, "Pseudo Numerical Methods for
Diffusion Models on Manifolds", eq. 11-12), on DDIM's strided timesteps.

Each step is a DDIM (eta = 0) transfer x_t -> x_{t'} driven by a combination eps' of the current
and previous eps predictions, the 4th-order Adams-Bashforth weights once three are stored:
    eps' = (55 e_t - 59 e_{t+1} + 37 e_{t+2} - 9 e_{t+3}) / 24,
with the 2nd- and 3rd-order formulas while fewer are stored,
    eps' = (3 e_t - e_{t+1}) / 2,   eps' = (23 e_t - 16 e_{t+1} + 5 e_{t+2}) / 12,
and on the first step the pseudo improved Euler eps' = (e_t + e(x~, t')) / 2, where x~ is the
plain DDIM step (one extra model call). The transfer is
    x_{t'} = sqrt(abar_{t'}) x0_hat + sqrt(1 - abar_{t'}) eps',
    x0_hat = (x_t - sqrt(1 - abar_t) eps') / sqrt(abar_t).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from speed.diffusion.samplers.common import predict, steps, stride_spacing, time_index

ADAMS_BASHFORTH = {  # weights of e_t, e_{t+1}, ... for 1 to 4 stored predictions
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def transfer(x, eps, abar, abar_next, clip_denoised):
    """DDIM (eta = 0) step from noise level abar to abar_next; returns (x_next, x0_hat).
    With `clip_denoised`, x0_hat is clamped to [-1, 1] and eps recomputed from it."""
    pred_xstart = (x - (1 - abar) ** 0.5 * eps) / abar**0.5
    if clip_denoised:
        pred_xstart = pred_xstart.clamp(-1, 1)
        eps = (x - abar**0.5 * pred_xstart) / (1 - abar) ** 0.5
    return abar_next**0.5 * pred_xstart + (1 - abar_next) ** 0.5 * eps, pred_xstart


@torch.no_grad()
def plms_sample(
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
    """Sample x_0 [like noise] from noise x_T [N, C, ...] with PLMS on `num_steps` timesteps
    (num_steps + 1 model calls: the first step costs two).

    The timesteps are as in `ddim_sample`; the last step lands on x_0 (abar = 1). Deterministic:
    `generator` is unused. clip_denoised, callback: as in `ddpm_sample`.
    """
    spaced = stride_spacing(diffusion, num_steps)
    abar, abar_prev = spaced.alphas_cumprod.tolist(), spaced.alphas_cumprod_prev.tolist()
    x, history = noise, []
    for step, i in enumerate(steps(spaced, progress)):
        t = time_index(i, x)
        eps = predict(spaced, model, x, t, model_kwargs, clip_denoised)[1]
        if not history and i > 0:
            x_euler, _ = transfer(x, eps, abar[i], abar_prev[i], clip_denoised)
            eps_next = predict(spaced, model, x_euler, t - 1, model_kwargs, clip_denoised)[1]
            eps_prime = (eps + eps_next) / 2
        else:
            stored = [eps, *history]
            eps_prime = sum(w * e for w, e in zip(ADAMS_BASHFORTH[len(stored)], stored))
        x, pred_xstart = transfer(x, eps_prime, abar[i], abar_prev[i], clip_denoised)
        history = [eps, *history][:3]
        if callback is not None:
            callback(step, int(spaced.timestep_map[i]), x, pred_xstart)
    return x
