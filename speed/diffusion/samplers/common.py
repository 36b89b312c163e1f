"""Pieces shared by the samplers: the time grids, the model's x_0/eps predictions, the step loop.

Every sampler runs on a respaced copy of the diffusion (`speed.diffusion.respace.respace`) whose
index i stands for original timestep `timestep_map[i]`; the model always sees original timesteps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from speed.diffusion.respace import SpacedDiffusion, respace, space_timesteps


@dataclass(frozen=True)
class AtLeast:
    """`typing.Annotated` metadata of a numeric sampler option: its smallest valid value, checked
    when the sampler is built from a config (`speed.generation.build_sampler`)."""

    low: float


def check_num_steps(diffusion, num_steps) -> int:
    """Validate 1 <= num_steps <= the original number of diffusion steps; returns it as an int."""
    total = diffusion.original_num_steps
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
        raise ValueError(f"num_steps must be an integer, got {num_steps!r}")
    if not 1 <= num_steps <= total:
        raise ValueError(
            f"num_steps must lie in 1..{total} (the diffusion's steps), got {num_steps}"
        )
    return int(num_steps)


def even_spacing(diffusion, num_steps: int) -> SpacedDiffusion:
    """Respace to `num_steps` evenly spaced original timesteps, both ends included (DiT's "N")."""
    num_steps = check_num_steps(diffusion, num_steps)
    return respace(diffusion, space_timesteps(diffusion.original_num_steps, str(num_steps)))


def stride_timesteps(total: int, num_steps: int) -> list[int]:
    """DDIM's strided original timesteps 0, k, 2k, ... ("ddimN") of `total`, ascending, or
    evenly spaced ones when no integer stride k gives exactly `num_steps` of them."""
    try:
        kept = space_timesteps(total, f"ddim{num_steps}")
    except ValueError:
        kept = space_timesteps(total, str(num_steps))
    return sorted(kept)


def stride_spacing(diffusion, num_steps: int) -> SpacedDiffusion:
    """Respace to `stride_timesteps` (DDIM's strided timesteps)."""
    num_steps = check_num_steps(diffusion, num_steps)
    return respace(diffusion, stride_timesteps(diffusion.original_num_steps, num_steps))


def time_index(index: int, x: torch.Tensor) -> torch.Tensor:
    """The respaced index `index` as a long tensor [N] on x's device."""
    return torch.full((x.shape[0],), index, device=x.device, dtype=torch.long)


def predict(spaced, model, x, t, model_kwargs, clip_denoised):
    """The model's x_0 and eps predictions at x [N, C, ...], respaced index t [N].

    Goes through `p_mean_variance`, so every model mean type (eps, x_0, x_{t-1}, v) and learned
    variances (only the first C channels matter) are handled; with `clip_denoised` the x_0
    prediction is clamped to [-1, 1] and eps recomputed from it.
    """
    out = spaced.p_mean_variance(
        model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs
    )
    pred_xstart = out["pred_xstart"]
    return pred_xstart, spaced._predict_eps_from_xstart(x, t, pred_xstart)


def steps(spaced: SpacedDiffusion, progress: bool) -> Iterable[int]:
    """Respaced indices from the noisiest down to 0, behind a tqdm bar when `progress`."""
    return tqdm(range(spaced.num_timesteps)[::-1], disable=not progress, leave=False)


def follow(spaced: SpacedDiffusion, outputs: Iterable[dict], callback: Callable | None):
    """Run a progressive loop (dicts "sample", "pred_xstart", from the noisiest index down) to its
    end, calling callback(step_index, original_t, x, pred_xstart) after every step; returns the
    final sample."""
    last = spaced.num_timesteps - 1
    for step, out in enumerate(outputs):
        if callback is not None:
            callback(step, int(spaced.timestep_map[last - step]), out["sample"], out["pred_xstart"])
    return out["sample"]
