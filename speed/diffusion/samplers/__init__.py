"""Samplers: functions that turn starting noise into samples with a trained model.

Every sampler has the signature
    fn(diffusion, model, noise, num_steps, model_kwargs=None, generator=None, progress=False,
       **options) -> sample (same shape as noise)
and respaces `diffusion`'s original schedule to `num_steps` itself; `model(x, t, **model_kwargs)`
is always called with original timesteps (long [N]). Classifier-free guidance is a property of the
model passed in (e.g. `model.forward_with_cfg` with `cfg_scale` in model_kwargs), so every sampler
supports it unchanged.
`generator` is one torch.Generator, or a list of them, one per sample (row r of the noise draws
from generator[r % len], `speed.utils.seeding.randn_rows`), so that a sample's draws do not depend
on the other samples of its batch.

A sampler's options are its keyword-only parameters (`sampler_options(name)`), each with its
default and annotation: `clip_denoised` (every sampler), `eta` ("ddim"), `grid` ("logSNR" or
"time_uniform", "dpm_solver++"). `callback` (fn(step_index, t, x, pred_xstart) after each step)
is keyword-only too but is passed by the caller, never configured. An annotation may carry
`AtLeast(low)` (`typing.Annotated`) so a config value is range-checked before sampling starts
(`speed.generation.build_sampler`); called directly with an unknown option, a sampler raises
TypeError naming it. A new sampler is one module plus one line in `SAMPLERS`.

Names: "ddpm" (ancestral), "ddim", "euler" (DDIM with eta = 0), "euler_ancestral", "plms", "pndm"
(Runge-Kutta warm-up, then PLMS), "dpm_solver++" (2M).
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from speed.diffusion.samplers.common import AtLeast
from speed.diffusion.samplers.ddim import ddim_sample, euler_sample
from speed.diffusion.samplers.ddpm import ddpm_sample
from speed.diffusion.samplers.dpm_solver import dpm_solver_pp_sample
from speed.diffusion.samplers.euler_ancestral import euler_ancestral_sample
from speed.diffusion.samplers.plms import plms_sample
from speed.diffusion.samplers.pndm import pndm_sample

SAMPLERS: dict[str, Callable] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "euler": euler_sample,
    "euler_ancestral": euler_ancestral_sample,
    "plms": plms_sample,
    "pndm": pndm_sample,
    "dpm_solver++": dpm_solver_pp_sample,
}


def get_sampler(name: str, registry: dict[str, Callable] | None = None) -> Callable:
    """The sampler function called `name` in `registry` (default `SAMPLERS`); ValueError (with
    the closest name) if there is none."""
    registry = SAMPLERS if registry is None else registry
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(str(name), list(registry), n=1, cutoff=0.4)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown sampler {name!r}{hint}; choose one of {sorted(registry)}")


CALLER_KEYWORDS = ("callback",)  # keyword-only arguments the caller passes, not options


def sampler_options(
    name: str, registry: dict[str, Callable] | None = None
) -> dict[str, tuple[Any, Any]]:
    """{option: (default, annotation)} of sampler `name` (of `registry`, default `SAMPLERS`): its
    keyword-only parameters except `CALLER_KEYWORDS`. Annotations are evaluated, `Annotated`
    metadata (e.g. `AtLeast`) kept."""
    fn = get_sampler(name, registry)
    hints = typing.get_type_hints(fn, include_extras=True)
    return {
        p.name: (p.default, hints.get(p.name, Any))
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in CALLER_KEYWORDS
    }


__all__ = [
    "CALLER_KEYWORDS",
    "SAMPLERS",
    "AtLeast",
    "ddim_sample",
    "ddpm_sample",
    "dpm_solver_pp_sample",
    "euler_ancestral_sample",
    "euler_sample",
    "get_sampler",
    "plms_sample",
    "pndm_sample",
    "sampler_options",
]
