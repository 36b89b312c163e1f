"""Continuous training-time distributions: each draws from its density, and SpeeD carried to
continuous time by SNR is the discrete definition on the DDPM-equivalent `vp` path."""

import numpy as np
import pytest
import torch

from speed.diffusion import create_diffusion
from speed.flow import create_interpolant
from speed.flow.paths import LinearPath, VPPath
from speed.flow.timesteps import (
    TIME_DISTRIBUTIONS,
    build_time_sampler,
    equal_snr_time,
    reference_log_snr,
)

N = 200_000


def draws(sampler, n=N, seed=0):
    t, w = sampler.sample(n, "cpu", generator=torch.Generator().manual_seed(seed))
    return t.double().numpy(), w.double().numpy()


@pytest.mark.parametrize("name", sorted(TIME_DISTRIBUTIONS))
@pytest.mark.parametrize("path", [LinearPath(), VPPath()])
def test_draws_follow_the_density(name, path):
    """Histogram of the draws against the density integrated over each bin (no dual here)."""
    sampler = build_time_sampler(path, 0.0, 1.0, sampling=name, dual_pivot=0)
    sampler.distribution.pivot = None  # the base distribution, before any mirror
    t, _ = draws(sampler)
    edges = np.linspace(0, 1, 21)
    fine = np.linspace(0, 1, 20001)[1:-1]
    density = sampler.distribution.density(fine)
    mass = []
    for a, b in zip(edges, edges[1:]):
        inside = (fine >= a) & (fine <= b)
        mass.append(np.trapezoid(density[inside], fine[inside]))
    mass = np.array(mass)
    observed = np.histogram(t, edges)[0] / N
    np.testing.assert_allclose(observed, mass / mass.sum(), atol=0.004)


def test_logit_normal_and_lognormal_formulas():
    t, _ = draws(build_time_sampler(LinearPath(), sampling="logit_normal", lognorm_mean=0.5))
    logit = np.log(t) - np.log1p(-t)
    assert abs(logit.mean() - 0.5) < 0.01 and abs(logit.std() - 1.0) < 0.01
    # EDM on the linear path: sigma / alpha = t / (1 - t), so ln(t / (1 - t)) ~ N(-1.2, 1.2^2)
    t, _ = draws(build_time_sampler(LinearPath(), sampling="lognormal"))
    log_ratio = np.log(t) - np.log1p(-t)
    assert abs(log_ratio.mean() + 1.2) < 0.01 and abs(log_ratio.std() - 1.2) < 0.01


@pytest.mark.parametrize("name", sorted(TIME_DISTRIBUTIONS))
def test_density_is_finite_at_the_ends_and_integrates_to_one(name):
    """On a train_eps = 0 path (linear, velocity) the density is evaluated at t = 0 and 1 too;
    the logit-normal's and lognormal's limit there is 0 (they once gave nan)."""
    sampler = build_time_sampler(LinearPath(), 0.0, 1.0, sampling=name)
    t = np.linspace(0.0, 1.0, 200001)
    density = sampler.distribution.density(t)
    assert np.isfinite(density[[0, -1]]).all()
    if name in ("logit_normal", "lognormal"):
        assert density[0] == 0.0 and density[-1] == 0.0
    assert abs(np.trapezoid(density, t) - 1.0) < 1e-3


def test_train_eps_bounds_every_draw():
    objective = create_interpolant(prediction="noise", sampling="logit_normal", lognorm_std=3.0)
    t, _ = draws(objective.timestep_sampler, n=20000)
    assert t.min() >= 1e-3 - 1e-7 and t.max() <= 1 - 1e-3 + 1e-7


def test_continuous_speed_is_the_discrete_one_on_the_ddpm_path():
    """vp path = DDPM's linear schedule in continuous time, index i at t = (i + 1) / 1000."""
    discrete = create_diffusion("", faster=True).timestep_sampler
    sampler = build_time_sampler(VPPath(), faster=True)
    dist = sampler.distribution
    assert abs(dist.t_tau - (700 + 1) / 1000) < 2e-3
    assert abs(dist.pivot - (discrete.pivot + 1) / 1000) < 2e-3
    # the mass below tau: k tau / (k tau + T - tau) in both
    assert abs(dist.mass_below - discrete.probs[:700].sum()) < 3e-3
    # weights at the time of step i's SNR (within 4e-3 of (i + 1) / 1000) are the discrete w_i
    grid = VPPath().time_of_log_snr(reference_log_snr(np.arange(1000)))
    assert np.abs(grid - (np.arange(1000) + 1) / 1000).max() < 4e-3
    np.testing.assert_allclose(sampler.weighting.weights(grid), discrete.weights, atol=0.02)
    # dual draws: the pair (t, |t - t_M|), as the discrete (i, |i - M|)
    t, w = draws(sampler, n=10)
    np.testing.assert_allclose(t[6:], np.abs(t[:4] - dist.pivot), atol=1e-6)  # 6 draws, 4 duals
    np.testing.assert_allclose(w, sampler.weighting.weights(t), atol=1e-6)


def test_effective_density_counts_the_mirrors():
    """SpeeD's dual draws on the linear path: the histogram of base draws and mirrors together
    follows `effective_density`; on the vp path it is the discrete `effective_probs` per step."""
    sampler = build_time_sampler(LinearPath(), faster=True)
    t, _ = draws(sampler)
    edges = np.linspace(0, 1, 41)
    fine = np.linspace(0, 1, 40001)
    density = sampler.distribution.effective_density(fine)
    mass = [np.trapezoid(np.where((fine >= a) & (fine <= b), density, 0.0), fine)
            for a, b in zip(edges, edges[1:])]  # fmt: skip
    assert sum(mass) == pytest.approx(1.0, abs=2e-3)
    np.testing.assert_allclose(np.histogram(t, edges)[0] / N, mass, atol=0.003)
    discrete = create_diffusion("", faster=True).timestep_sampler
    vp = build_time_sampler(VPPath(), faster=True).distribution
    # away from the edges (tau = 700, M = 642 and the mirrors' ends 700 - M and 999 - M), where
    # the continuous mirror |t - t_M| lands a step from the discrete |i - M|
    borders = np.array([0, 700, 642, 700 - 642, 999 - 642, 999])
    steps = np.array([i for i in range(1000) if np.abs(i - borders).min() > 3])
    continuous = vp.effective_density((steps + 1) / 1000) / 1000
    np.testing.assert_allclose(continuous, discrete.effective_probs[steps], rtol=0.05)


def test_speed_areas_move_with_the_path_snr():
    linear = build_time_sampler(LinearPath(), faster=True).distribution
    assert linear.t_tau == pytest.approx(equal_snr_time(LinearPath(), 700))
    assert 0.92 < linear.t_tau < 0.925 and 0.88 < linear.pivot < 0.9
    path = LinearPath()
    snr = np.exp(path.log_snr(np.array([linear.t_tau])))[0]
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    assert snr == pytest.approx(abar[700] / (1 - abar[700]), rel=1e-9)


def test_unknown_modes_and_options_name_the_closest():
    with pytest.raises(ValueError, match="did you mean 'lognormal'"):
        build_time_sampler(LinearPath(), sampling="lognorml")
    with pytest.raises(ValueError, match="unknown diffusion option 'lognorm_men'.*lognorm_mean"):
        build_time_sampler(LinearPath(), lognorm_men=1.0)
