"""Samplers: functions that turn starting noise into samples with a trained model.

Every sampler has the signature
    fn(diffusion, model, noise, num_steps, model_kwargs=None, generator=None, progress=False,
       **options) -> sample (same shape as noise)
and respaces `diffusion`'s original schedule to `num_steps` itself; `model(x, t, **model_kwargs)`
is always called with original timesteps (long [N]). Classifier-free guidance is a property of the
model passed in (e.g. `model.forward_with_cfg` with `cfg_scale` in model_kwargs), so every sampler
supports it unchanged. Common options: `clip_denoised` (default False) and `callback`
(fn(step_index, t, x, pred_xstart) after each step); `eta` for "ddim"; `grid` ("logSNR" or
"time_uniform") for "dpm_solver++". An unknown option raises TypeError naming it.

Names: "ddpm" (ancestral), "ddim", "euler" (DDIM with eta = 0), "plms", "dpm_solver++" (2M).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from speed.diffusion.samplers.ddim import ddim_sample, euler_sample
from speed.diffusion.samplers.ddpm import ddpm_sample
from speed.diffusion.samplers.dpm_solver import dpm_solver_pp_sample
from speed.diffusion.samplers.plms import plms_sample

SAMPLERS: dict[str, Callable] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "euler": euler_sample,
    "plms": plms_sample,
    "dpm_solver++": dpm_solver_pp_sample,
}


def get_sampler(name: str) -> Callable:
    """The sampler function called `name`; ValueError (with the closest name) if there is none."""
    if name in SAMPLERS:
        return SAMPLERS[name]
    close = difflib.get_close_matches(str(name), list(SAMPLERS), n=1, cutoff=0.4)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown sampler {name!r}{hint}; choose one of {sorted(SAMPLERS)}")


__all__ = [
    "SAMPLERS",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver_pp_sample",
    "euler_sample",
    "get_sampler",
    "plms_sample",
]
