"""The analytic test case of the sampler tests: data x_0 ~ N(MU, S^2 I) has the exact eps prediction
eps*(x_t, t) = sqrt(1 - abar) (x_t - sqrt(abar) MU) / (abar S^2 + 1 - abar), and the probability
flow ODE from timestep t maps x_t to MU + S (x_t - sqrt(abar_t) MU) / sqrt(abar_t S^2 + 1 - abar_t)
(the monotone affine map between the two Gaussian marginals). Linear schedule, T = 1000."""

import numpy as np
import torch

MU, S = 0.3, 0.5
F64 = torch.float64
ABAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))


def gaussian_model(target="eps", learned=False, seen=None):
    """The exact model for N(MU, S^2) data, returning eps, x0 or v (plus variance channels)."""

    def model(x, t, **kwargs):
        if seen is not None:
            seen.append((t.clone(), kwargs))
        a = torch.as_tensor(ABAR, dtype=x.dtype)[t].reshape(-1, *([1] * (x.ndim - 1)))
        eps = (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        out = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[target]
        return torch.cat([out, torch.full_like(x, 0.37)], dim=1) if learned else out

    return model


def noise_like(n=64, seed=0, dtype=F64):
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def exact_flow(noise, t):
    a = ABAR[t]
    return MU + S * (noise - np.sqrt(a) * MU) / np.sqrt(a * S**2 + 1 - a)
