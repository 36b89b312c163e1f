"""Pieces shared by the interpolant samplers: the time grid (with its shift), the model's
prediction with classifier-free guidance confined to a time interval, and the step callback.

Every sampler runs from t = 1 - sample_eps (noise) down to t = sample_eps (data) and calls the
model through `Interpolant.call_model`, i.e. with time_scale * t.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from speed.flow.interpolant import Interpolant


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's timestep shift (Esser et al. 2024, sec. 5.3.2): t' = s t / (1 + (s - 1) t).

    s > 1 spends more of the steps at high noise (for larger images); s = 1 is the identity; it
    keeps 0 and 1 in place and is monotone."""
    return shift * t / (1 + (shift - 1) * t)


def time_grid(
    objective: Interpolant, num_steps: int, shift: float = 1.0, end: float | None = None
) -> torch.Tensor:
    """num_steps + 1 decreasing times (float64): evenly spaced from 1 - sample_eps to `end`
    (default sample_eps), then shifted (`shift_time`)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    start = 1.0 - objective.sample_eps
    end = objective.sample_eps if end is None else end
    grid = torch.linspace(start, end, num_steps + 1, dtype=torch.float64)
    return shift_time(grid, shift)


@dataclass
class Denoiser:
    """The model's (x_0, eps) at (x, t), guidance applied only for t in [guidance_low,
    guidance_high] (Kynkaanniemi et al. 2024, "guidance interval"; REPA's sampler).

    Guidance is the model's: `model_kwargs` holds `cfg_scale` when the caller wrapped the model's
    `forward_with_cfg` (`speed.generation.generate`); outside the interval the scale is set to 1,
    which gives the conditional prediction.
    """

    objective: Interpolant
    model: Callable
    model_kwargs: dict
    guidance_low: float = 0.0
    guidance_high: float = 1.0

    def __post_init__(self):
        if not 0 <= self.guidance_low <= self.guidance_high <= 1:
            raise ValueError(
                "need 0 <= guidance_low <= guidance_high <= 1, got "
                f"{self.guidance_low}, {self.guidance_high}"
            )

    def kwargs_at(self, t: float) -> dict:
        guided = self.guidance_low <= t <= self.guidance_high
        if guided or "cfg_scale" not in self.model_kwargs:
            return self.model_kwargs
        return {**self.model_kwargs, "cfg_scale": 1.0}

    def __call__(self, x: torch.Tensor, t: float):
        """(x_0, eps) as x's dtype; t a Python float."""
        times = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        x0, eps = self.objective.predict(self.model, x, times, self.kwargs_at(t))
        return x0.to(x.dtype), eps.to(x.dtype)

    def velocity(self, x: torch.Tensor, t: float):
        """(dx/dt, x_0) at (x, t)."""
        x0, eps = self(x, t)
        times = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        return self.objective.velocity(x0, eps, times), x0


def report(callback: Callable | None, objective: Interpolant, step: int, t, x, x0) -> None:
    """callback(step_index, model time = time_scale * t, x, predicted x_0), if any."""
    if callback is not None:
        callback(step, float(t) * objective.time_scale, x, x0)


def check_family(objective, sampler: str) -> None:
    """One clear line when an interpolant sampler is handed another objective."""
    if getattr(objective, "family", None) != Interpolant.family:
        family = getattr(objective, "family", type(objective).__name__)
        raise ValueError(
            f"sampler '{sampler}' integrates an interpolant (flow matching) but was given a "
            f"{family} objective; choose one of that objective's samplers"
        )
