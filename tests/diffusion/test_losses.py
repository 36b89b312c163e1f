"""Gaussian KL and the discretised Gaussian likelihood against independent formulas."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from speed.diffusion.losses import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    p = torch.distributions.Normal(m1, torch.exp(0.5 * lv1))
    q = torch.distributions.Normal(m2, torch.exp(0.5 * lv2))
    expected = torch.distributions.kl_divergence(p, q)
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-12, atol=1e-12)


def test_normal_kl_against_standard_normal_with_scalars():
    mean = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, np.log(2.0), np.log(0.5)], dtype=torch.float64)
    # KL(N(m, v) || N(0, 1)) = 0.5 (v + m^2 - 1 - log v)
    var = torch.exp(logvar)
    expected = 0.5 * (var + mean**2 - 1.0 - logvar)
    torch.testing.assert_close(normal_kl(mean, logvar, 0.0, 0.0), expected)
    assert normal_kl(mean, logvar, mean, logvar).abs().max() == 0


def test_approx_cdf_is_close_to_the_exact_normal_cdf():
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    err = (approx_standard_normal_cdf(x) - torch.from_numpy(norm.cdf(x.numpy()))).abs().max()
    assert err < 3e-4


@pytest.mark.parametrize("mean,log_scale", [(0.0, np.log(0.1)), (0.7, np.log(0.02)), (-1.0, 0.0)])
def test_discretized_likelihood_sums_to_one_over_the_256_bins(mean, log_scale):
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the centres of the uint8 bins
    means = torch.full_like(x, mean)
    log_scales = torch.full_like(x, log_scale)
    logp = discretized_gaussian_log_likelihood(x, means=means, log_scales=log_scales)
    assert torch.exp(logp).sum().item() == pytest.approx(1.0, abs=1e-9)
    # Each bin's mass against the exact normal CDF over [x - 1/255, x + 1/255].
    std = np.exp(log_scale)
    hi = np.where(x.numpy() > 0.999, np.inf, x.numpy() + 1 / 255)
    lo = np.where(x.numpy() < -0.999, -np.inf, x.numpy() - 1 / 255)
    exact = norm.cdf((hi - mean) / std) - norm.cdf((lo - mean) / std)
    np.testing.assert_allclose(torch.exp(logp).numpy(), exact, atol=5e-4)


def test_discretized_likelihood_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="share one shape"):
        discretized_gaussian_log_likelihood(
            torch.zeros(3), means=torch.zeros(4), log_scales=torch.zeros(3)
        )


def test_mean_flat():
    x = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)
    torch.testing.assert_close(mean_flat(x), torch.tensor([5.5, 17.5], dtype=torch.float64))
