"""Beta schedules against their defining formulas (Ho et al. 2020; Nichol & Dhariwal 2021)."""

import math

import numpy as np
import pytest

from speed.diffusion.schedules import betas_for_alpha_bar, get_named_beta_schedule


def test_linear_endpoints_and_spacing():
    betas = get_named_beta_schedule("linear", 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1] == pytest.approx(0.02, abs=1e-15)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)


def test_linear_scales_with_number_of_steps():
    betas = get_named_beta_schedule("linear", 250)  # ends scaled by 1000 / 250 = 4
    assert betas[0] == pytest.approx(4e-4, abs=1e-15)
    assert betas[-1] == pytest.approx(0.08, abs=1e-15)


@pytest.mark.parametrize("name", ["cosine", "squaredcos_cap_v2"])
def test_cosine_alpha_bar_formula(name):
    steps = 1000
    betas = get_named_beta_schedule(name, steps)
    f = lambda t: math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = np.array([f(t + 1) / f(0) for t in range(steps)])
    abar = np.cumprod(1.0 - betas)
    unclipped = betas < 0.999
    assert unclipped[:-1].all()  # only the very last beta reaches the 0.999 cap
    np.testing.assert_allclose(abar[unclipped], expected[unclipped], rtol=1e-10)
    assert betas[-1] == pytest.approx(0.999)


def test_betas_for_alpha_bar_reproduces_a_linear_abar():
    betas = betas_for_alpha_bar(10, lambda t: 1.0 - 0.5 * t)
    np.testing.assert_allclose(np.cumprod(1.0 - betas), 1.0 - 0.5 * np.arange(1, 11) / 10)


def test_quad_const_sqrt_linear_forms():
    quad = get_named_beta_schedule("quad", 1000)
    np.testing.assert_allclose(np.sqrt(quad), np.linspace(0.01, math.sqrt(0.02), 1000), rtol=1e-12)
    np.testing.assert_array_equal(get_named_beta_schedule("const", 1000), np.full(1000, 0.02))
    sqrt_linear = get_named_beta_schedule("sqrt_linear", 1000)
    np.testing.assert_allclose(sqrt_linear**2, np.linspace(1e-4, 0.02, 1000), rtol=1e-12)


def test_unknown_schedule_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        get_named_beta_schedule("cosin", 1000)


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_bad_number_of_steps(steps):
    with pytest.raises(ValueError, match="diffusion_steps"):
        get_named_beta_schedule("linear", steps)


def test_too_few_steps_for_scaled_const_schedule():
    with pytest.raises(ValueError, match="betas above 1"):
        get_named_beta_schedule("const", 10)  # beta = 0.02 * 100 = 2


def test_numpy_integer_steps_are_accepted():
    np.testing.assert_array_equal(
        get_named_beta_schedule("linear", np.int64(100)), get_named_beta_schedule("linear", 100)
    )
