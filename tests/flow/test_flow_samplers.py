"""Interpolant samplers on the Gaussian case with an exact answer (tests/flow/flow_case.py): the
Euler and Heun errors fall at order 1 and 2, dopri5 meets its tolerance, Euler-Maruyama reaches
the data distribution; SiT's Euler loop on fixed tensors; guidance interval; shift; family."""

import math

import numpy as np
import pytest
import torch
from flow_case import MU, S, exact_map, exact_model, noise_like  # tests/flow

from speed.flow import create_interpolant
from speed.flow.samplers import SAMPLERS
from speed.flow.samplers.common import shift_time, time_grid


def error(sampler, objective, steps, prediction="velocity", **options):
    noise = noise_like()
    model = exact_model(objective.path, prediction, objective.time_scale)
    got = SAMPLERS[sampler](objective, model, noise, steps, **options)
    t_end = objective.sample_eps
    return float((got - exact_map(objective.path, noise, t_end, 1 - t_end)).abs().max())


@pytest.mark.parametrize("path", ["linear", "gvp"])
@pytest.mark.parametrize("sampler, order", [("euler", 1), ("heun", 2)])
def test_fixed_step_error_falls_at_the_order(path, sampler, order):
    objective = create_interpolant(path=path)
    errors = [error(sampler, objective, n) for n in (32, 64, 128)]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(r - order) < 0.1 for r in rates), (errors, rates)


def test_heun_leaves_no_noise_on_sharp_data():
    """Data N(MU, 1e-4^2), nearly a point: at t = 0 the exact velocity is -x, so a Heun
    correction on the last step would leave x_0 + 0.5 t_1 eps (std 0.5 / 13 = 0.038 with 13
    steps); EDM's and REPA's last step is plain Euler, which lands on the data."""
    objective = create_interpolant()
    calls = []
    model = exact_model(objective.path, seen=calls, std=1e-4)
    got = SAMPLERS["heun"](objective, model, noise_like(n=256), 13)
    assert len(calls) == 2 * 13 - 1
    assert float((got - MU).abs().max()) < 1e-3


@pytest.mark.parametrize("prediction", ["noise", "score"])
def test_other_predictions_sample_the_same_ode(prediction):
    objective = create_interpolant(prediction=prediction)
    assert objective.sample_eps == 1e-3
    assert error("heun", objective, 64, prediction) < 1e-3


def test_dopri5_meets_its_tolerance():
    objective = create_interpolant(path="gvp")
    assert error("dopri5", objective, 4, atol=1e-8, rtol=1e-8) < 1e-6
    assert error("dopri5", objective, 4) < 1e-2  # SiT's atol 1e-6, rtol 1e-3


@pytest.mark.parametrize("last_step", ["mean", "euler", "tweedie", "none"])
def test_euler_maruyama_reaches_the_data_distribution(last_step):
    objective = create_interpolant()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 1, 1, 1, generator=g, dtype=torch.float64)
    model = exact_model(objective.path)
    got = SAMPLERS["euler_maruyama"](
        objective,
        model,
        noise,
        100,
        generator=torch.Generator().manual_seed(1),
        last_step=last_step,
    )
    # 4000 draws: the standard error of the mean is 0.008, of the std 0.006
    assert abs(float(got.mean()) - MU) < 0.03
    assert abs(float(got.std()) - S) < 0.03


def test_euler_maruyama_step_on_fixed_tensors():
    """Two calls with last_step=mean on the linear path: one EM step 1 -> 0.04 with w = t
    (REPA's g^2 = 2t), then the drift step to 0, written out from REPA's formulas."""
    objective = create_interpolant()
    x = torch.tensor([[[[0.8]]], [[[-0.3]]]], dtype=torch.float64)
    model = exact_model(objective.path)
    got = SAMPLERS["euler_maruyama"](
        objective, model, x, 2, generator=torch.Generator().manual_seed(5)
    )
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def drift(x, t):
        v = model(x, torch.full((2,), 1000.0 * t, dtype=torch.float64))
        score = (-(1 - t) * v - x) / t  # REPA: (alpha / d_alpha v - x) / var, var = t
        return v - 0.5 * (2 * t) * score

    dt = 0.04 - 1.0
    x1 = x + dt * drift(x, 1.0) + math.sqrt(2 * 1.0) * math.sqrt(abs(dt)) * z
    expected = x1 + (0.0 - 0.04) * drift(x1, 0.04)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_euler_is_sits_euler_loop_on_fixed_tensors():
    """SiT integrates dx/ds = v_SiT from s = 0 (noise) to 1; with v_SiT = -v ours at t = 1 - s
    that is our Euler from t = 1 to 0."""
    objective = create_interpolant()
    model = exact_model(objective.path)
    x = noise_like(n=3, seed=4)
    got = SAMPLERS["euler"](objective, model, x, 5)
    expected = x.clone()
    for s in np.linspace(0, 1, 6)[:-1]:
        v_sit = -model(expected, torch.full((3,), 1000.0 * (1 - s), dtype=torch.float64))
        expected = expected + 0.2 * v_sit
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_guidance_interval_sets_the_scale_to_one_outside():
    objective = create_interpolant()
    scales = []

    def model(x, t, y, cfg_scale):
        scales.append((round(float(t[0]) / 1000, 3), cfg_scale))
        return torch.zeros_like(x)

    SAMPLERS["euler"](
        objective, model, torch.zeros(2, 1, 2, 2), 4,
        model_kwargs={"y": None, "cfg_scale": 4.0}, guidance_low=0.3, guidance_high=0.6,
    )  # fmt: skip
    assert scales == [(1.0, 1.0), (0.75, 1.0), (0.5, 4.0), (0.25, 1.0)]


def test_shift_moves_steps_to_high_noise_and_keeps_the_ends():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor([0, 0.5, 0.75, 1], dtype=torch.float64)
    torch.testing.assert_close(shift_time(t, 3.0), expected)
    grid = time_grid(create_interpolant(), 4, shift=3.0)
    assert grid[0] == 1 and grid[-1] == 0 and torch.all(grid[:-1] > grid[1:])
    coarse, fine = (error("heun", create_interpolant(), n, shift=3.0) for n in (32, 64))
    assert coarse < 0.03 and fine < coarse / 3.5  # still converges, at order 2


def test_callback_sees_model_times_and_x0():
    objective = create_interpolant()
    seen = []
    SAMPLERS["heun"](
        objective, exact_model(objective.path), noise_like(4), 4,
        callback=lambda i, t, x, x0: seen.append((i, t, float(x0.mean()))),
    )  # fmt: skip
    assert [(i, t) for i, t, _ in seen] == [(0, 1000.0), (1, 750.0), (2, 500.0), (3, 250.0)]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_gaussian_diffusion_is_refused(name):
    from speed.diffusion import create_diffusion

    with pytest.raises(ValueError, match="integrates an interpolant"):
        SAMPLERS[name](create_diffusion(""), lambda x, t: x, torch.zeros(1, 1, 2, 2), 2)
