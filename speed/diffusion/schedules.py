"""Noise schedules: the variances beta_t of the forward process, in float64 numpy.

The forward process adds noise step by step,
q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), so that
q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with abar_t = prod_{s<=t} (1 - beta_s)
(Ho et al. 2020, eq. 4). Index t = 0..T-1 here stands for the paper's step t + 1.

Named schedules (`get_named_beta_schedule`):
- `linear`: Ho et al. 2020, beta from 1e-4 to 0.02 for T = 1000, both ends scaled by 1000 / T so
  that the schedule keeps its shape for any T (guided-diffusion's convention).
- `cosine` (alias `squaredcos_cap_v2`): Nichol & Dhariwal 2021, eq. 17,
  abar(t) = f(t) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), s = 0.008, betas
  clipped at 0.999.
- `quad`, `const`, `sqrt_linear`: forms used in SpeeD's ablations, on the same (scaled) endpoints as
  `linear`: quad = linspace(sqrt(beta_start), sqrt(beta_end), T)^2, const = beta_end everywhere,
  sqrt_linear = sqrt(linspace(beta_start, beta_end, T)).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

import numpy as np

LINEAR_BETA_START = 1e-4  # beta_1 of Ho et al. 2020 at T = 1000
LINEAR_BETA_END = 0.02  # beta_T of Ho et al. 2020 at T = 1000
COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal 2021, eq. 17
MAX_BETA = 0.999  # clip of betas_for_alpha_bar, avoids a singularity at t = T


def linear_betas(beta_start: float, beta_end: float, num_steps: int) -> np.ndarray:
    """Evenly spaced betas from `beta_start` to `beta_end` (both included), float64 [T]."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def quad_betas(beta_start: float, beta_end: float, num_steps: int) -> np.ndarray:
    """Betas with evenly spaced square roots: linspace(sqrt(b0), sqrt(b1), T)^2, float64 [T]."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=np.float64) ** 2


def sqrt_linear_betas(beta_start: float, beta_end: float, num_steps: int) -> np.ndarray:
    """Square roots of evenly spaced betas: sqrt(linspace(b0, b1, T)), float64 [T]."""
    return np.sqrt(np.linspace(beta_start, beta_end, num_steps, dtype=np.float64))


def const_betas(beta_start: float, beta_end: float, num_steps: int) -> np.ndarray:
    """The constant schedule beta_t = beta_end (`beta_start` is unused), float64 [T]."""
    del beta_start
    return np.full(num_steps, beta_end, dtype=np.float64)


def betas_for_alpha_bar(
    num_steps: int, alpha_bar: Callable[[float], float], max_beta: float = MAX_BETA
) -> np.ndarray:
    """Discretise a continuous abar(t), t in [0, 1], into T betas (float64 [T]).

    beta_i = min(1 - abar((i + 1) / T) / abar(i / T), max_beta), so prod(1 - beta) follows abar.
    """
    betas = [
        min(1.0 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return np.array(betas, dtype=np.float64)


def cosine_alpha_bar(t: float) -> float:
    """Unnormalised cosine-schedule abar at t in [0, 1]: cos^2((t + s) / (1 + s) * pi / 2)."""
    return math.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2


_ENDPOINT_SCHEDULES = {
    "linear": linear_betas,
    "quad": quad_betas,
    "const": const_betas,
    "sqrt_linear": sqrt_linear_betas,
}
_COSINE_NAMES = ("cosine", "squaredcos_cap_v2")
SCHEDULE_NAMES = (*_ENDPOINT_SCHEDULES, *_COSINE_NAMES)


def get_named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """Betas (float64 [num_steps]) of a named schedule; see the module docstring for the names."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"diffusion_steps must be a positive integer, got {num_steps!r}")
    num_steps = int(num_steps)
    if name in _COSINE_NAMES:
        return betas_for_alpha_bar(num_steps, cosine_alpha_bar)
    if name in _ENDPOINT_SCHEDULES:
        scale = 1000 / num_steps
        betas = _ENDPOINT_SCHEDULES[name](
            scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_steps
        )
        if betas.max() > 1.0:
            raise ValueError(
                f"noise_schedule {name!r} with diffusion_steps={num_steps} gives betas above 1; "
                "use more diffusion steps"
            )
        return betas
    close = difflib.get_close_matches(str(name), SCHEDULE_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown noise_schedule {name!r}{hint}; choose one of {list(SCHEDULE_NAMES)}")
