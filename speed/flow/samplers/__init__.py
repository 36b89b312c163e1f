"""Samplers of the interpolant objective, with the signature of the Gaussian diffusion's
(`speed.diffusion.samplers`):
    fn(objective, model, noise, num_steps, model_kwargs=None, generator=None, progress=False,
       **options) -> sample
The model is called as model(x, time_scale * t, **model_kwargs); classifier-free guidance is the
model's (`forward_with_cfg`), confined to t in [guidance_low, guidance_high] by every sampler.
A sampler's options are its keyword-only parameters (`sampler_options(name, SAMPLERS)`).

Names: "euler", "heun" (fixed-step ODE), "dopri5" (adaptive ODE, torchdiffeq), "euler_maruyama"
(SDE). A new sampler is one module plus one line in `SAMPLERS`.
"""

from __future__ import annotations

from collections.abc import Callable

from speed.flow.samplers.ode import dopri5_sample, euler_sample, heun_sample
from speed.flow.samplers.sde import euler_maruyama_sample

SAMPLERS: dict[str, Callable] = {
    "euler": euler_sample,
    "heun": heun_sample,
    "dopri5": dopri5_sample,
    "euler_maruyama": euler_maruyama_sample,
}

__all__ = ["SAMPLERS", "dopri5_sample", "euler_maruyama_sample", "euler_sample", "heun_sample"]
