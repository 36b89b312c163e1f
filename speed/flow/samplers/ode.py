"""ODE samplers of an interpolant: the probability-flow ODE dx/dt = v(x, t) from t = 1 - sample_eps
(noise) to t = sample_eps (data).

- `euler`: x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i) (first order; one model call per step).
- `heun`: Heun's method (explicit trapezoid; second order), as in EDM's (Karras et al. 2022, Alg.
  1) and REPA's samplers: two calls per step except the last, an Euler step without correction,
  so 2 num_steps - 1 calls. At t = 0 the input is the data itself, from which no network can
  read the noise, so the velocity it learns there is -x_0; a correction with it would put half
  the removed noise back (x_0 + 0.5 t eps on the linear path, t the last step's start), which in
  pixel space shows as speckle on flat backgrounds.
- `dopri5`: the adaptive Dormand-Prince 5(4) solver of torchdiffeq (Chen et al. 2018), the
  library SiT samples with; atol / rtol are SiT's defaults; num_steps + 1 is the number of
  points of the grid where the solution is reported (for callbacks), not the solver's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from torchdiffeq import odeint
from tqdm.auto import tqdm

from speed.diffusion.samplers.common import AtLeast
from speed.flow.samplers.common import Denoiser, check_family, report, time_grid


def _fixed_step(name: str, second_order: bool):
    @torch.no_grad()
    def sample(
        objective,
        model,
        noise: torch.Tensor,
        num_steps: int,
        model_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        *,
        shift: Annotated[float, AtLeast(1e-6)] = 1.0,
        guidance_low: Annotated[float, AtLeast(0.0)] = 0.0,
        guidance_high: Annotated[float, AtLeast(0.0)] = 1.0,
        callback: Callable | None = None,
    ) -> torch.Tensor:
        check_family(objective, name)
        denoiser = Denoiser(objective, model, model_kwargs or {}, guidance_low, guidance_high)
        grid = time_grid(objective, num_steps, shift).tolist()
        x = noise
        for i in tqdm(range(num_steps), disable=not progress, leave=False):
            t, t_next = grid[i], grid[i + 1]
            v, x0 = denoiser.velocity(x, t)
            x_next = x + (t_next - t) * v
            if second_order and i < num_steps - 1:
                v_next, _ = denoiser.velocity(x_next, t_next)
                x_next = x + (t_next - t) * 0.5 * (v + v_next)
            x = x_next
            report(callback, objective, i, t, x, x0)
        return x

    sample.__name__ = f"{name}_sample"
    sample.__doc__ = (
        f"Sample [like noise] from noise [N, C, ...] in `num_steps` {name.capitalize()} steps.\n\n"
        "    Args:\n"
        "        shift: SD3's timestep shift of the grid (1 = evenly spaced in t).\n"
        "        guidance_low, guidance_high: apply classifier-free guidance only for t in this\n"
        "            interval (t = 1 noise, 0 data).\n"
        "        callback: fn(step_index, time_scale * t, x, x0_prediction) after each step.\n"
    )
    return sample


euler_sample = _fixed_step("euler", second_order=False)
heun_sample = _fixed_step("heun", second_order=True)


@torch.no_grad()
def dopri5_sample(
    objective,
    model,
    noise: torch.Tensor,
    num_steps: int,
    model_kwargs: dict | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    atol: Annotated[float, AtLeast(0.0)] = 1e-6,
    rtol: Annotated[float, AtLeast(0.0)] = 1e-3,
    shift: Annotated[float, AtLeast(1e-6)] = 1.0,
    guidance_low: Annotated[float, AtLeast(0.0)] = 0.0,
    guidance_high: Annotated[float, AtLeast(0.0)] = 1.0,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Sample [like noise] with the adaptive dopri5 solver (torchdiffeq.odeint).

    Args:
        atol, rtol: the solver's absolute and relative tolerances (SiT's 1e-6 and 1e-3).
        shift, guidance_low, guidance_high, callback: as in `euler_sample`; the callback sees the
            solution at the num_steps + 1 grid times (dense output), x_0 predicted there.
    """
    check_family(objective, "dopri5")
    denoiser = Denoiser(objective, model, model_kwargs or {}, guidance_low, guidance_high)
    grid = time_grid(objective, num_steps, shift).to(device=noise.device, dtype=noise.dtype)

    def drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return denoiser.velocity(x, float(t))[0]

    path = odeint(drift, noise, grid, method="dopri5", atol=atol, rtol=rtol)
    if callback is not None:
        for i in range(num_steps):
            x = path[i + 1]
            report(callback, objective, i, grid[i + 1], x, denoiser(x, float(grid[i + 1]))[0])
    return path[-1]
