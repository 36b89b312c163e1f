"""DPM-Solver++(2M): the multistep second-order solver in data prediction (Lu et al. 2022,
"DPM-Solver++", Alg. 2), for the discrete-time diffusion.

With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t) and the
model's data prediction D_i = x0_hat(x_{t_i}, t_i), a step t_{i-1} -> t_i with h_i = lambda_{t_i} -
lambda_{t_{i-1}} is
    x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D',
with D' = D_{i-1} on the first step (first order, i.e. DDIM) and afterwards
    D' = (1 + 1 / (2 r_i)) D_{i-1} - 1 / (2 r_i) D_{i-2},   r_i = h_{i-1} / h_i.

Time grid (`grid`): `num_steps` original timesteps from T-1 down to 0, the model called once at
each. "logSNR" (default; DPM-Solver's grid for few steps, Lu et al. 2022, sec. 3.3): uniform in
lambda between lambda_{T-1} and lambda_0, mapped back to t by linear interpolation of lambda over
the integer timesteps and rounded (nudged apart where rounding would merge two). "time_uniform":
uniform in t, rounded, like DPM-Solver's discrete 'time_uniform' schedule. After the call at t = 0
a final first-order step goes to the clean endpoint (abar = 1, lambda = +inf), where the update
reduces to x_0 = D (so the output is the data prediction at t = 0, as with DDPM and DDIM). Total:
`num_steps` model calls.

Lower order at the end (DPM-Solver's `lower_order_final`): the update into t = 0 is first order
below 10 steps (the reference implementation's rule) and when the last lambda interval is more
than twice the one before it (r < 1/2, where the extrapolation weight 1 / (2 r) exceeds 1: the
time-uniform grid, whose last interval is 3-5 times the one before); otherwise it is second order,
and only the step to the clean endpoint is first order.

Error against the number of steps: on the Gaussian test of tests/diffusion the error of 2M on
the logSNR grid has a hump near 10 steps, in this sampler and in the reference implementation
alike (its relative scale error: 3.3e-2 at 10 calls, then falling). Along the flow the data
prediction is a sigmoid in lambda (convex below lambda = -log(data std), concave above), so the
linear extrapolation errs one way on the noisy side and the other way on the clean side, and the
two cancel near 9 lambda intervals (h ~ 1). Lowering the order into t = 0 at every step count,
as this sampler did before, moved that cancellation onto 10 steps, which then looked better than
15 (scale error 1.4e-2 against 2.2e-2) by luck rather than accuracy. With the rule above the
error falls with every step count from 10 on (3.2e-2, 2.3e-2, 1.5e-2, 6.6e-3, 2.2e-3 at 10, 15,
20, 30, 50 steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from speed.diffusion.respace import respace
from speed.diffusion.samplers.common import check_num_steps, predict, steps, time_index

LOWER_ORDER_FINAL_BELOW = 10  # fewer steps: first-order update into t = 0 (the reference's rule)
MIN_STEP_RATIO = 0.5  # r below it (extrapolation weight 1 / (2 r) > 1): first-order update


def time_uniform_timesteps(alphas_cumprod: np.ndarray, num_steps: int) -> np.ndarray:
    """`num_steps` distinct integer timesteps uniform in t from T - 1 down to 0, T =
    len(alphas_cumprod) (ascending int64 array)."""
    grid = np.linspace(len(alphas_cumprod) - 1, 0, num_steps)  # one step: [T - 1]
    return np.unique(np.round(grid).astype(np.int64))


def log_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """lambda_t = log(alpha_t / sigma_t) = log(abar_t / (1 - abar_t)) / 2 per timestep."""
    return 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))


def logsnr_uniform_timesteps(alphas_cumprod: np.ndarray, num_steps: int) -> np.ndarray:
    """`num_steps` distinct integer timesteps uniform in lambda from lambda_{T-1} to lambda_0
    (ascending int64 array; one step: [T - 1]).

    Where the rounded grid is denser than the integers (many steps, near t = 0) the timesteps are
    pushed up just enough to be distinct, so there are always exactly `num_steps` of them.
    """
    total = len(alphas_cumprod)
    lam = log_snr(alphas_cumprod)  # decreasing in t
    targets = np.linspace(lam[-1], lam[0], num_steps)[::-1]  # ascending t
    t = np.round(np.interp(targets, lam[::-1], np.arange(total)[::-1])).astype(np.int64)
    rank = np.arange(num_steps)
    # t_k - k must be non-decreasing for distinct t_k; 0 <= t_k - k <= T - num_steps keeps the ends.
    return np.clip(np.maximum.accumulate(t - rank), 0, total - num_steps) + rank


GRIDS = {"logSNR": logsnr_uniform_timesteps, "time_uniform": time_uniform_timesteps}


@torch.no_grad()
def dpm_solver_pp_sample(
    diffusion,
    model,
    noise: torch.Tensor,
    num_steps: int,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    grid: Literal["logSNR", "time_uniform"] = "logSNR",
    clip_denoised: bool = False,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Sample x_0 [like noise] from noise x_T [N, C, ...] with DPM-Solver++(2M) in `num_steps`
    model calls. Deterministic: `generator` is unused. With `clip_denoised` the data predictions
    are clamped to [-1, 1] (DPM-Solver++'s thresholding with a fixed bound).
    grid: the timesteps, "logSNR" (uniform in log(alpha / sigma)) or "time_uniform".
    callback: as in `ddpm_sample`."""
    num_steps = check_num_steps(diffusion, num_steps)
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {sorted(GRIDS)}, got {grid!r}")
    spaced = respace(diffusion, GRIDS[grid](diffusion.base_alphas_cumprod, num_steps))
    abar = spaced.alphas_cumprod
    alpha, sigma = np.sqrt(abar), np.sqrt(1.0 - abar)
    lam = log_snr(abar)
    x, prev_d, prev_h = noise, None, None
    for step, i in enumerate(steps(spaced, progress)):
        d = predict(spaced, model, x, time_index(i, x), model_kwargs, clip_denoised)[0]
        if i == 0:
            x = d  # first-order step to abar = 1: sigma_next = 0, e^{-h} = 0
        else:
            h = lam[i - 1] - lam[i]
            r = None if prev_h is None else float(prev_h / h)
            lower_final = i == 1 and (num_steps < LOWER_ORDER_FINAL_BELOW or r < MIN_STEP_RATIO)
            if r is None or lower_final:
                d_prime = d  # first step, and (see above) the step into t = 0
            else:
                d_prime = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * prev_d
            x = float(sigma[i - 1] / sigma[i]) * x - float(alpha[i - 1] * np.expm1(-h)) * d_prime
            prev_d, prev_h = d, h
        if callback is not None:
            callback(step, int(spaced.timestep_map[i]), x, d)
    return x
