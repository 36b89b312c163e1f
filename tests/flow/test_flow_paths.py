"""Path coefficients and training targets against SiT's `transport/path.py` formulas, written
here in SiT's own time s = 1 - t (s = 0 noise, s = 1 data) on fixed tensors."""

import math

import numpy as np
import pytest
import torch

from speed.flow.paths import PATHS, GVPPath, LinearPath, VPPath

S_VALUES = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)


def sit_linear(s):  # ICPlan: alpha = s, sigma = 1 - s, d_alpha = 1, d_sigma = -1
    return s, 1 - s, torch.ones_like(s), -torch.ones_like(s)


def sit_gvp(s):  # GVPCPlan
    return (
        torch.sin(s * math.pi / 2),
        torch.cos(s * math.pi / 2),
        math.pi / 2 * torch.cos(s * math.pi / 2),
        -math.pi / 2 * torch.sin(s * math.pi / 2),
    )


def sit_vp(s, sigma_min=0.1, sigma_max=20.0):  # VPCPlan
    log_mean = -0.25 * (1 - s) ** 2 * (sigma_max - sigma_min) - 0.5 * (1 - s) * sigma_min
    d_log_mean = 0.5 * (1 - s) * (sigma_max - sigma_min) + 0.5 * sigma_min
    alpha = torch.exp(log_mean)
    sigma = torch.sqrt(1 - torch.exp(2 * log_mean))
    d_sigma = torch.exp(2 * log_mean) * (2 * d_log_mean) / (-2 * sigma)
    return alpha, sigma, alpha * d_log_mean, d_sigma


@pytest.mark.parametrize(
    "path, sit", [(LinearPath(), sit_linear), (GVPPath(), sit_gvp), (VPPath(), sit_vp)]
)
def test_coefficients_are_sits_in_reversed_time(path, sit):
    t = 1 - S_VALUES
    alpha, sigma, d_alpha, d_sigma = sit(S_VALUES)
    torch.testing.assert_close(path.alpha(t), alpha, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(path.sigma(t), sigma, rtol=1e-12, atol=1e-12)
    # d/dt = -d/ds
    torch.testing.assert_close(path.d_alpha(t), -d_alpha, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(path.d_sigma(t), -d_sigma, rtol=1e-12, atol=1e-12)


def test_fixed_values_of_the_linear_and_gvp_paths():
    t = torch.tensor([0.25], dtype=torch.float64)
    assert float(LinearPath().alpha(t)) == 0.75 and float(LinearPath().sigma(t)) == 0.25
    assert float(GVPPath().alpha(t)) == pytest.approx(math.cos(math.pi / 8), abs=1e-15)
    assert float(GVPPath().sigma(t)) == pytest.approx(math.sin(math.pi / 8), abs=1e-15)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_xt_and_velocity_match_sits_plan(name):
    """SiT's plan(t, x0=noise, x1=data): xt = alpha x1 + sigma x0, ut = d_alpha x1 + d_sigma x0;
    ours at t = 1 - s gives the same xt and -ut."""
    path = PATHS[name]()
    sit = {"linear": sit_linear, "gvp": sit_gvp, "vp": sit_vp}[name]
    g = torch.Generator().manual_seed(0)
    data = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    alpha, sigma, d_alpha, d_sigma = (c.reshape(-1, 1, 1, 1) for c in sit(S_VALUES))
    xt = path.sample_xt(data, noise, 1 - S_VALUES)
    torch.testing.assert_close(xt, alpha * data + sigma * noise, rtol=1e-12, atol=1e-12)
    ut = path.velocity(data, noise, 1 - S_VALUES)
    torch.testing.assert_close(ut, -(d_alpha * data + d_sigma * noise), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PATHS))
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score"])
def test_split_recovers_data_and_noise(name, prediction):
    path = PATHS[name]()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    x = path.sample_xt(x0, eps, t)
    sigma = path.sigma(t).reshape(-1, 1, 1, 1)
    out = {"velocity": path.velocity(x0, eps, t), "noise": eps, "score": -eps / sigma}[prediction]
    got_x0, got_eps = path.split(prediction, out, x, t)
    torch.testing.assert_close(got_x0, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_eps, eps, rtol=1e-9, atol=1e-9)


def test_score_from_velocity_is_sits():
    """SiT's get_score_from_velocity on the linear path: (alpha / d_alpha v - x) / var with
    var = sigma^2 - alpha / d_alpha d_sigma sigma (its time, its velocity)."""
    path = LinearPath()
    s = torch.tensor([0.3], dtype=torch.float64)
    x = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    v_sit = torch.tensor([[0.4, 0.9]], dtype=torch.float64)
    alpha, sigma, d_alpha, d_sigma = sit_linear(s)
    ratio = alpha / d_alpha
    expected = (ratio * v_sit - x) / (sigma**2 - ratio * d_sigma * sigma)
    _, eps = path.split("velocity", -v_sit, x, 1 - s)
    torch.testing.assert_close(-eps / path.sigma(1 - s), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_time_of_log_snr_inverts_log_snr(name):
    path = PATHS[name]()
    t = np.linspace(0.02, 0.98, 49)
    np.testing.assert_allclose(path.time_of_log_snr(path.log_snr(t)), t, atol=1e-10)
    assert np.all(np.diff(path.log_snr(t)) < 0)
