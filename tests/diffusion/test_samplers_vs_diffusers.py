"""`pndm` and `euler_ancestral` against diffusers' PNDMScheduler and
EulerAncestralDiscreteScheduler, stepping the same exact Gaussian model (gaussian_case.py) from the
same x_T.

Both schedulers are given our float64 schedule (their own tables are float32) so that only the
order of the arithmetic differs. Settings our samplers equal:
- pndm: PNDMScheduler(skip_prk_steps=False, timestep_spacing="leading", steps_offset=0,
  set_alpha_to_one=True) whenever N divides T (our DDIM stride is the smallest one giving N
  timesteps, ceil(T / N); diffusers' is T // N: N = 30 gives 34 against 33). set_alpha_to_one: our
  last step lands on x_0 (abar = 1), diffusers' default stops at abar_0.
- euler_ancestral: EulerAncestralDiscreteScheduler(timestep_spacing="linspace", steps_offset=0)
  whenever linspace(0, T - 1, N) is integral (N - 1 divides 999: N = 4, 10, 28, 38, ...); for
  other N diffusers feeds fractional timesteps with interpolated sigmas and we round them. The
  same x_T is x~_T = x_T / sqrt(abar_{T-1}) in diffusers' variables (its own pipeline would start
  from randn * sigma_max, smaller by 2e-5 relative), and the same injected noise is one float64
  N(0, I) draw of the sample's shape per step, in step order, from equally seeded generators.
"""

import numpy as np
import pytest
import torch
from gaussian_case import ABAR, gaussian_model, noise_like  # tests/diffusion

from speed.diffusion import create_diffusion
from speed.diffusion.samplers import SAMPLERS

diffusers = pytest.importorskip("diffusers")
CONFIG = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


@pytest.fixture(scope="module")
def diffusion():
    return create_diffusion("", learn_sigma=False)


def timesteps_seen(name, diffusion, num_steps, **kw):
    seen = []
    SAMPLERS[name](diffusion, gaussian_model(seen=seen), noise_like(1), num_steps, **kw)
    return [int(t[0]) for t, _ in seen]


@pytest.mark.parametrize("num_steps", [10, 20, 25, 50])
def test_pndm_equals_diffusers_pndm_scheduler(diffusion, num_steps):
    scheduler = diffusers.PNDMScheduler(**CONFIG, set_alpha_to_one=True, skip_prk_steps=False)
    scheduler.alphas_cumprod = torch.tensor(ABAR)  # float64, as ours
    scheduler.set_timesteps(num_steps)
    model, noise = gaussian_model(), noise_like(8)
    x = noise
    for t in scheduler.timesteps.tolist():
        eps = model(x, torch.full((len(x),), t, dtype=torch.long))
        x = scheduler.step(eps, t, x).prev_sample
    assert timesteps_seen("pndm", diffusion, num_steps) == scheduler.timesteps.tolist()
    ours = SAMPLERS["pndm"](diffusion, model, noise, num_steps)
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-12)  # measured: 3e-15


@pytest.mark.parametrize("num_steps", [10, 28])
def test_euler_ancestral_equals_diffusers_scheduler_with_the_same_noise(diffusion, num_steps):
    """Tolerance 1e-6: diffusers' step rounds the sample to float32 (x~ up to ~500 at the start,
    so ~3e-5 in x~ and 2e-7 in x; ~1e-7 in the later steps), all else is float64."""
    scheduler = diffusers.EulerAncestralDiscreteScheduler(**CONFIG, timestep_spacing="linspace")
    scheduler.set_timesteps(num_steps)
    t_grid = scheduler.timesteps.numpy().astype(np.int64)
    np.testing.assert_array_equal(t_grid, scheduler.timesteps.numpy())  # integral grid
    sigma = np.sqrt((1 - ABAR[t_grid]) / ABAR[t_grid])
    scheduler.sigmas = torch.tensor(np.append(sigma, 0.0))
    model, noise = gaussian_model(), noise_like(8)
    generator = torch.Generator().manual_seed(3)
    x = noise * np.sqrt(1 + sigma[0] ** 2)
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        eps = model(x_in, torch.full((len(x),), int(t), dtype=torch.long))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    assert timesteps_seen("euler_ancestral", diffusion, num_steps) == t_grid.tolist()
    ours = SAMPLERS["euler_ancestral"](
        diffusion, model, noise, num_steps, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-6)
