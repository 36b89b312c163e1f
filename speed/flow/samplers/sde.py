"""Euler-Maruyama sampling of an interpolant's reverse-time SDE (SiT, Ma et al. 2024, sec. 3.3).

For any diffusion coefficient w(t) >= 0 the SDE
    dx = [v(x, t) - w(t) s(x, t)] dt + sqrt(2 w(t)) dW,   t running from 1 down to 0,
with score s = -eps / sigma_t, has the same marginals as the probability-flow ODE dx/dt = v. An
Euler-Maruyama step from t to t' < t is
    x' = x + (t' - t) [v + w eps / sigma] + sqrt(2 w (t - t')) z.
`diffusion_form` chooses w (times `diffusion_norm`):
- "sigma": w = sigma_t (SiT's default; REPA's sampler: 2t on the linear path is its g^2),
- "sbdm": w = sigma_t (sigma'_t - alpha'_t sigma_t / alpha_t), the w of the VP SDE whose
  marginals the path has (SiT's "SBDM"); infinite where alpha = 0, so it needs sample_eps > 0
  on the linear and GVP paths,
- "constant": w = 1.
The last step (from `last_step_size` to sample_eps) adds no noise (SiT's and REPA's choice):
"mean" takes the drift step without noise, "euler" an ODE step, "tweedie" jumps to the x_0
prediction E[x_0 | x_t]; "none" runs Euler-Maruyama steps all the way, noise included. With a
last step the grid holds num_steps - 1 Euler-Maruyama steps, so num_steps model calls in all.
"mean" is not a denoising step: on the linear path with w = sigma it lands on x_0 - t eps (t the
step's start, eps the noise in x_t), so on nearly point-like data (a flat black background) it
leaves noise of the size of `last_step_size` (std 0.077 with 26 steps of the exact model of
N(0.3, 1e-4^2), against 5e-7 for "euler" and "tweedie"): in pixel space use "euler" or "tweedie".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
from tqdm.auto import tqdm

from speed.diffusion.samplers.common import AtLeast
from speed.flow.samplers.common import Denoiser, check_family, report, shift_time, time_grid
from speed.utils.seeding import randn_rows


def diffusion_coefficient(path, form: str, norm: float, t: float) -> float:
    """w(t) of `form` (module docstring) times `norm`."""
    tt = torch.tensor(t, dtype=torch.float64)
    if form == "sigma":
        w = path.sigma(tt)
    elif form == "sbdm":
        a, s = path.alpha(tt), path.sigma(tt)
        w = s * (path.d_sigma(tt) - path.d_alpha(tt) * s / a)
    else:
        w = torch.ones((), dtype=torch.float64)
    return norm * float(w)


@torch.no_grad()
def euler_maruyama_sample(
    objective,
    model,
    noise: torch.Tensor,
    num_steps: int,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    diffusion_form: Literal["sigma", "sbdm", "constant"] = "sigma",
    diffusion_norm: Annotated[float, AtLeast(0.0)] = 1.0,
    last_step: Literal["mean", "euler", "tweedie", "none"] = "mean",
    last_step_size: Annotated[float, AtLeast(0.0)] = 0.04,
    shift: Annotated[float, AtLeast(1e-6)] = 1.0,
    guidance_low: Annotated[float, AtLeast(0.0)] = 0.0,
    guidance_high: Annotated[float, AtLeast(0.0)] = 1.0,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Sample [like noise] from noise [N, C, ...] with `num_steps` model calls.

    Args:
        diffusion_form, diffusion_norm: w(t) (module docstring).
        last_step: "mean", "euler", "tweedie" or "none"; last_step_size: the time it covers
            (REPA's and SiT's 0.04), before the shift.
        shift, guidance_low, guidance_high, callback: as in the ODE samplers; noise is drawn
            from `generator`.
    """
    check_family(objective, "euler_maruyama")
    path = objective.path
    lo = objective.sample_eps
    if last_step != "none" and not lo < last_step_size < 1 - lo:
        raise ValueError(
            f"last_step_size={last_step_size} must lie between sample_eps={lo} and 1 - sample_eps"
        )
    if last_step != "none" and num_steps < 2:
        raise ValueError("euler_maruyama with a last step needs num_steps >= 2")
    if diffusion_form == "sbdm" and float(path.alpha(torch.tensor(1.0 - lo))) <= 0:
        raise ValueError(
            "diffusion_form=sbdm is infinite at t = 1 on this path; set diffusion.sample_eps > 0"
        )
    denoiser = Denoiser(objective, model, model_kwargs or {}, guidance_low, guidance_high)
    if last_step == "none":
        grid = time_grid(objective, num_steps, shift).tolist()
    else:
        grid = time_grid(objective, num_steps - 1, shift, end=last_step_size).tolist()
        grid.append(float(shift_time(torch.tensor(lo, dtype=torch.float64), shift)))
    em_steps = num_steps if last_step == "none" else num_steps - 1
    x = noise
    for i in tqdm(range(num_steps), disable=not progress, leave=False):
        t, t_next = grid[i], grid[i + 1]
        x0, eps = denoiser(x, t)
        times = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        v = objective.velocity(x0, eps, times)
        w = diffusion_coefficient(path, diffusion_form, diffusion_norm, t)
        drift = v + w * eps / float(path.sigma(torch.tensor(t, dtype=torch.float64)))
        if i < em_steps:
            z = randn_rows(x.shape, generator, device=x.device, dtype=x.dtype)
            x = x + (t_next - t) * drift + (2 * w * (t - t_next)) ** 0.5 * z
        elif last_step == "mean":
            x = x + (t_next - t) * drift
        elif last_step == "euler":
            x = x + (t_next - t) * v
        else:  # tweedie
            x = x0
        report(callback, objective, i, t, x, x0)
    return x
