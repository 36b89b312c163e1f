"""Loss weighting modes: values checked against the published formulas in float64 numpy."""

import numpy as np
import pytest

from speed.diffusion.timesteps import build_timestep_sampler

T = 1000


def linear_abar():
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, T, dtype=np.float64))


def normalized_g(abar, timesteps=None):
    g = np.gradient(1.0 - abar) if timesteps is None else np.gradient(1.0 - abar, timesteps)
    return (g - g.min()) / (g.max() - g.min())


@pytest.mark.parametrize("lam", [0.6, 0.8, 1.0, 0.5])
def test_speed_weights_are_change_aware_below_tau_and_one_above(lam):
    abar = linear_abar()
    weights = build_timestep_sampler(abar, faster=True, lam=lam).weights
    norm = normalized_g(abar)
    for t in (0, 1, 100, 300, 641, 699):
        assert weights[t] == pytest.approx((1 - lam) + (2 * lam - 1) * norm[t], rel=1e-12)
    assert np.all(weights[:700] >= 1 - lam - 1e-12) and np.all(weights[:700] <= lam + 1e-12)
    np.testing.assert_array_equal(weights[700:], 1.0)


def test_speed_weights_follow_tau():
    weights = build_timestep_sampler(linear_abar(), faster=True, tau=500).weights
    assert weights[499] < 1.0
    np.testing.assert_array_equal(weights[500:], 1.0)


def test_respaced_weights_use_derivatives_in_original_timesteps():
    kept = np.arange(0, T, 4)
    abar = linear_abar()
    weights = build_timestep_sampler(abar[kept], kept, faster=True).weights
    expected = 0.4 + 0.2 * normalized_g(abar[kept], kept.astype(np.float64))
    np.testing.assert_allclose(weights[kept < 700], expected[kept < 700], rtol=1e-12)
    full = build_timestep_sampler(abar, faster=True).weights
    # same curve on a 4x coarser grid (one-sided differences at the ends differ most)
    np.testing.assert_allclose(weights, full[kept], atol=3e-3)


def test_theory_weights_span_point_two_to_point_eight_everywhere():
    abar = linear_abar()
    weights = build_timestep_sampler(abar, weighting="theory").weights
    np.testing.assert_allclose(weights, 0.2 + 0.6 * normalized_g(abar), rtol=1e-12)
    assert weights.min() == pytest.approx(0.2) and weights.max() == pytest.approx(0.8)


def test_p2_weights():
    abar = linear_abar()
    snr = abar / (1 - abar)
    default = build_timestep_sampler(abar, weighting="p2").weights
    np.testing.assert_allclose(default, 1 - abar, rtol=1e-12)  # 1 / (1 + SNR) = 1 - abar
    custom = build_timestep_sampler(abar, weighting="p2", p2_k=2.0, p2_gamma=0.5).weights
    np.testing.assert_allclose(custom, (2.0 + snr) ** -0.5, rtol=1e-12)


@pytest.mark.parametrize(
    "target, denominator",
    [("eps", lambda s: s), ("v", lambda s: s + 1), ("x0", lambda s: np.ones_like(s))],
)
def test_min_snr_weights_follow_hang_et_al(target, denominator):
    abar = linear_abar()
    snr = abar / (1 - abar)
    weights = build_timestep_sampler(
        abar, weighting="min_snr", min_snr_gamma=5.0, min_snr_target=target
    ).weights
    np.testing.assert_allclose(weights, np.minimum(snr, 5.0) / denominator(snr), rtol=1e-12)


def test_min_snr_eps_default_is_one_where_snr_is_below_gamma():
    abar = linear_abar()
    snr = abar / (1 - abar)
    weights = build_timestep_sampler(abar, weighting="min_snr").weights
    np.testing.assert_allclose(weights[snr <= 5.0], 1.0, rtol=1e-12)
    t = int(np.argmax(snr < 5.0)) - 1  # last step with SNR above gamma
    assert weights[t] == pytest.approx(5.0 / snr[t], rel=1e-12) and weights[t] < 1.0
    assert weights[0] == pytest.approx(5.0 * (1 - abar[0]) / abar[0], rel=1e-12)


def test_no_weighting_gives_none():
    assert build_timestep_sampler(linear_abar(), sampling="speed").weights is None
