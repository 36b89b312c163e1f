"""PNDM sampling (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds":
F-PNDM, eq. 12-13; diffusers' PNDMScheduler), on DDIM's strided timesteps.

Every step is PLMS's DDIM (eta = 0) transfer x_t -> x_{t'} (`plms.transfer`) driven by a
combination eps' of eps predictions. The first three steps are pseudo Runge-Kutta (eq. 13): with
the midpoint m = t - (t - t') // 2 (an original timestep, rounded like diffusers' half step),
    e1 = eps(x_t, t),                      e2 = eps(transfer(x_t, e1, t -> m), m),
    e3 = eps(transfer(x_t, e2, t -> m), m), e4 = eps(transfer(x_t, e3, t -> t'), t'),
    eps' = (e1 + 2 e2 + 2 e3 + e4) / 6      (four model calls per step);
afterwards eps' is the 4th-order Adams-Bashforth combination of e(x_t, t) and the three stored
before it (eq. 12, one call per step), the stored ones being the e1 of the warm-up steps. The last
step lands on x_0 (abar = 1). With fewer than four steps the warm-up covers all but the last one.
Equals diffusers' PNDMScheduler(skip_prk_steps=False, timestep_spacing="leading", steps_offset=0,
set_alpha_to_one=True) when num_steps divides T (its stride is T // N, DDIM's here ceil(T / N)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from speed.diffusion.respace import respace
from speed.diffusion.samplers.common import predict, steps, stride_spacing, time_index
from speed.diffusion.samplers.plms import ADAMS_BASHFORTH, transfer

WARM_UP_STEPS = 3  # Runge-Kutta steps before the 4th-order multistep formula has its history


@torch.no_grad()
def pndm_sample(
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
    """Sample x_0 [like noise] from noise x_T [N, C, ...] with PNDM in `num_steps` steps on the
    timesteps of `ddim_sample` (num_steps + 9 model calls from 4 steps on: the three warm-up steps
    cost four each). Deterministic: `generator` is unused. With `clip_denoised` every x0 prediction
    inside a transfer is clamped to [-1, 1]. callback: as in `ddpm_sample`, once per step.
    """
    grid = stride_spacing(diffusion, num_steps)
    kept = [int(t) for t in grid.timestep_map]  # ascending original timesteps
    warm_up = min(WARM_UP_STEPS, len(kept) - 1)
    mids = [t - (t - t_next) // 2 for t_next, t in zip(kept[-warm_up - 1 : -1], kept[-warm_up:])]
    spaced = respace(diffusion, set(kept) | set(mids))  # answers the model at grid and midpoints
    index = {int(t): i for i, t in enumerate(spaced.timestep_map)}
    abar = spaced.alphas_cumprod.tolist()

    def level(t: int | None) -> float:
        return 1.0 if t is None else abar[index[t]]

    def eps_at(x: torch.Tensor, t: int) -> torch.Tensor:
        return predict(spaced, model, x, time_index(index[t], x), model_kwargs, clip_denoised)[1]

    def transfer_to(x, eps, t, t_next):
        return transfer(x, eps, level(t), level(t_next), clip_denoised)

    x, history = noise, []
    for step, i in enumerate(steps(grid, progress)):
        t, t_next = kept[i], kept[i - 1] if i > 0 else None
        eps = eps_at(x, t)
        if len(history) < warm_up:
            mid = t - (t - t_next) // 2
            e2 = eps_at(transfer_to(x, eps, t, mid)[0], mid)
            e3 = eps_at(transfer_to(x, e2, t, mid)[0], mid)
            e4 = eps_at(transfer_to(x, e3, t, t_next)[0], t_next)
            eps_prime = (eps + 2 * e2 + 2 * e3 + e4) / 6
        else:
            stored = [eps, *history]
            eps_prime = sum(w * e for w, e in zip(ADAMS_BASHFORTH[len(stored)], stored))
        x, pred_xstart = transfer_to(x, eps_prime, t, t_next)
        history = [eps, *history][:3]
        if callback is not None:
            callback(step, t, x, pred_xstart)
    return x
