"""The analytic case of the interpolant tests: data x_0 ~ N(MU, S^2 I). On a path
x_t = a_t x_0 + s_t eps the marginal is N(a_t MU, a_t^2 S^2 + s_t^2), E[x_0 | x_t] =
MU + a_t S^2 (x_t - a_t MU) / var_t, and the probability-flow ODE from t = 1 maps x_1 to
m_t + sd_t (x_1 - m_1) / sd_1 (the monotone affine map between Gaussian marginals); at t = 0 it
is MU + S (x_1 - m_1) / sd_1. E[eps | x_t] = s_t (x_t - a_t MU) / var_t."""

import torch

MU, S = 0.3, 0.5
F64 = torch.float64


def exact_model(path, prediction="velocity", time_scale=1000.0, seen=None, std=S):
    """The exact network for N(MU, std^2) data on `path`, outputting `prediction`."""

    def model(x, t_model, **kwargs):
        if seen is not None:
            seen.append((t_model.clone(), kwargs))
        t = (t_model.to(F64) / time_scale).reshape(-1, *([1] * (x.ndim - 1)))
        a, s = path.alpha(t), path.sigma(t)
        var = a**2 * std**2 + s**2
        x0 = MU + a * std**2 * (x - a * MU) / var
        eps = s * (x - a * MU) / var
        if prediction == "noise":
            return eps.to(x.dtype)
        if prediction == "score":
            return (-eps / s).to(x.dtype)
        return (path.d_alpha(t) * x0 + path.d_sigma(t) * eps).to(x.dtype)

    return model


def exact_map(path, x1, t_end=0.0, t_start=1.0):
    """The ODE solution at t_end from x1 at t_start."""
    t0, t1 = torch.tensor(t_end, dtype=F64), torch.tensor(t_start, dtype=F64)
    m0, m1 = path.alpha(t0) * MU, path.alpha(t1) * MU
    sd0 = (path.alpha(t0) ** 2 * S**2 + path.sigma(t0) ** 2).sqrt()
    sd1 = (path.alpha(t1) ** 2 * S**2 + path.sigma(t1) ** 2).sqrt()
    return m0 + sd0 * (x1 - m1) / sd1


def noise_like(n=64, seed=0):
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=F64)
