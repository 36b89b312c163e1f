"""Samplers on the analytic Gaussian case of gaussian_case.py (exact model, exact flow)."""

import numpy as np
import pytest
import torch
from gaussian_case import (  # tests/diffusion
    ABAR,
    F64,
    MU,
    S,
    exact_flow,
    gaussian_model,
    noise_like,
)

from speed.diffusion import create_diffusion, space_timesteps
from speed.diffusion.samplers import SAMPLERS, dpm_solver, get_sampler

DETERMINISTIC = ["ddim", "euler", "plms", "pndm", "dpm_solver++"]


@pytest.fixture(scope="module")
def diffusion():
    return create_diffusion("", learn_sigma=False)


@pytest.fixture(scope="module")
def learned():
    return create_diffusion("")


def first_timestep(name, num_steps, diffusion):
    seen = []
    SAMPLERS[name](diffusion, gaussian_model(seen=seen), noise_like(1), num_steps)
    return int(seen[0][0][0])


@pytest.mark.parametrize(
    "name,steps,tol",
    [("ddim", 1000, 1e-2), ("plms", 50, 5e-3), ("pndm", 50, 3e-3), ("dpm_solver++", 100, 1e-2)],
)
def test_deterministic_samplers_follow_the_exact_flow(diffusion, name, steps, tol):
    noise = noise_like()
    out = SAMPLERS[name](diffusion, gaussian_model(), noise, steps)
    start = first_timestep(name, steps, diffusion)
    assert (out - exact_flow(noise, start)).abs().max() < tol
    assert abs(out.mean().item() - MU) < 0.1 and abs(out.std().item() - S) < 0.1


def test_plms_matches_the_papers_update_rules(diffusion):
    """PLMS (Liu et al. 2022, eq. 11-12) written out in numpy on the analytic model."""
    kept = list(range(0, 1000, 100))  # ddim10
    abar = ABAR[kept]
    abar_prev = np.append(1.0, abar[:-1])
    eps_of = lambda x, a: np.sqrt(1 - a) * (x - np.sqrt(a) * MU) / (a * S**2 + 1 - a)
    step = lambda x, e, a, a_next: (
        np.sqrt(a_next) * (x - np.sqrt(1 - a) * e) / np.sqrt(a) + np.sqrt(1 - a_next) * e
    )
    noise = noise_like(4)
    x, old = noise.numpy(), []
    for i in reversed(range(len(kept))):
        e = eps_of(x, abar[i])
        if not old:  # pseudo improved Euler
            e_prime = (e + eps_of(step(x, e, abar[i], abar_prev[i]), abar_prev[i])) / 2
        elif len(old) == 1:
            e_prime = (3 * e - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = step(x, e_prime, abar[i], abar_prev[i])
        old.append(e)
    out = SAMPLERS["plms"](diffusion, gaussian_model(), noise, 10)
    np.testing.assert_allclose(out.numpy(), x, rtol=1e-10, atol=1e-10)


def test_ddim_plms_and_dpm_solver_agree_at_many_steps(diffusion):
    noise = noise_like()
    ddim = SAMPLERS["ddim"](diffusion, gaussian_model(), noise, 1000)
    dpm = SAMPLERS["dpm_solver++"](diffusion, gaussian_model(), noise, 200)
    plms = SAMPLERS["plms"](diffusion, gaussian_model(), noise, 100)
    assert (ddim - dpm).abs().max() < 1e-2
    assert (plms - dpm).abs().max() < 2e-3


def log_snr(t):
    return 0.5 * np.log(ABAR[t] / (1 - ABAR[t]))


@pytest.mark.parametrize("num_steps", [10, 25])
def test_dpm_solver_logsnr_grid_is_uniform_in_lambda(diffusion, num_steps):
    """Each timestep is a rounding of its lambda target: the target lies between the lambdas of
    its integer neighbours."""
    seen = []
    SAMPLERS["dpm_solver++"](diffusion, gaussian_model(seen=seen), noise_like(1), num_steps)
    kept = np.array([int(t[0]) for t, _ in seen])[::-1]  # ascending
    targets = np.linspace(log_snr(999), log_snr(0), num_steps)[::-1]
    assert kept[0] == 0 and kept[-1] == 999 and len(set(kept)) == num_steps
    inner = slice(1, -1)
    assert np.all(log_snr(kept[inner] + 1) <= targets[inner])
    assert np.all(targets[inner] <= log_snr(kept[inner] - 1))


@pytest.mark.parametrize("num_steps", [200, 1000])
def test_dpm_solver_logsnr_grid_keeps_every_step_when_rounding_would_merge_them(num_steps):
    kept = dpm_solver.logsnr_uniform_timesteps(ABAR, num_steps)
    assert len(np.unique(kept)) == num_steps and kept[0] == 0 and kept[-1] == 999
    if num_steps == 1000:
        np.testing.assert_array_equal(kept, np.arange(1000))


def test_dpm_solver_logsnr_grid_beats_the_time_uniform_grid_at_10_steps(diffusion):
    """Against the exact flow of the Gaussian data (measured: logSNR 0.056, time-uniform 0.38)."""
    noise = noise_like(256)
    exact = exact_flow(noise, 999)
    error = {
        grid: (SAMPLERS["dpm_solver++"](diffusion, gaussian_model(), noise, 10, grid=grid) - exact)
        .abs()
        .max()
        .item()
        for grid in ["logSNR", "time_uniform"]
    }
    assert error["logSNR"] < 0.07 and error["time_uniform"] > 0.3
    out = SAMPLERS["dpm_solver++"](diffusion, gaussian_model(), noise, 10)
    assert abs(out.std().item() - exact.std().item()) < 0.02  # measured 0.016


def scale_error(name, num_steps, diffusion, **options):
    """Relative error of a deterministic sampler's scale: on the Gaussian case its output is an
    affine map of x_T, whose exact slope is S / sqrt(abar S^2 + 1 - abar) (exact_flow)."""
    ends = torch.tensor([0.0, 1.0], dtype=F64).reshape(2, 1, 1, 1)
    out = SAMPLERS[name](diffusion, gaussian_model(), ends, num_steps, **options)
    exact = exact_flow(ends, 999)
    return ((out[1] - out[0]) / (exact[1] - exact[0])).item() - 1


def test_dpm_solver_error_falls_with_every_step_count(diffusion):
    """Measured: 3.2e-2, 2.3e-2, 1.5e-2, 6.6e-3, 2.2e-3 (before the lower-order rule of
    dpm_solver.py: 1.4e-2, 2.2e-2, 1.4e-2, 6.5e-3, 2.1e-3, a hump at 12 steps)."""
    errors = [abs(scale_error("dpm_solver++", n, diffusion)) for n in (10, 15, 20, 30, 50)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 3e-3
    # second order from 20 steps on: 2.5x the steps, about 2.5^2 less error
    assert 5 < errors[2] / errors[4] < 8


def test_dpm_solver_keeps_the_first_order_step_into_t0_on_the_time_uniform_grid(diffusion):
    """There the last lambda interval is 3-5x the one before (r < 1/2); a second-order update
    into t = 0 would make 50 steps 20x worse (5.6e-2 against measured 2.9e-3)."""
    assert abs(scale_error("dpm_solver++", 50, diffusion, grid="time_uniform")) < 5e-3


def test_pndm_model_calls(diffusion):
    """num_steps + 3 per Runge-Kutta step: three from 4 steps on, all but the last below."""
    for num_steps, calls in [(10, 19), (25, 34), (3, 3 + 3 * 2), (1, 1)]:
        seen = []
        SAMPLERS["pndm"](diffusion, gaussian_model(seen=seen), noise_like(1), num_steps)
        assert len(seen) == calls, num_steps


def test_dpm_solver_time_uniform_grid(diffusion):
    seen = []
    model = gaussian_model(seen=seen)
    SAMPLERS["dpm_solver++"](diffusion, model, noise_like(1), 20, grid="time_uniform")
    expected = sorted(set(np.round(np.linspace(999, 0, 20)).astype(int).tolist()))
    assert sorted(int(t[0]) for t, _ in seen) == expected


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_perfect_denoiser_of_one_image_recovers_it(diffusion, name):
    """With eps(x_t) = (x_t - sqrt(abar) x0) / sqrt(1 - abar) every sampler lands exactly on x0."""
    x0 = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64) * 2 - 1

    def model(x, t):
        a = torch.as_tensor(ABAR, dtype=F64)[t].reshape(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    gen = torch.Generator().manual_seed(0)
    out = SAMPLERS[name](
        diffusion, model, noise_like(3, dtype=F64).repeat(1, 2, 1, 1), 10, generator=gen
    )
    torch.testing.assert_close(out, x0, rtol=1e-8, atol=1e-8)


def ddpm_moments(num_steps):
    """Exact mean and variance of DDPM's output (fixed large variance) on the Gaussian model:
    every step is x' = m x + c + sigma z, so the moments follow a linear recursion."""
    kept = sorted(space_timesteps(1000, str(num_steps)))
    abar = ABAR[kept]
    mean, var = 0.0, 1.0
    for i in range(len(kept) - 1, -1, -1):
        a, a_prev = abar[i], abar[i - 1] if i > 0 else 1.0
        beta = 1 - a / a_prev
        c1, c2 = beta * np.sqrt(a_prev) / (1 - a), (1 - a_prev) * np.sqrt(1 - beta) / (1 - a)
        k = np.sqrt(1 - a) / (a * S**2 + 1 - a)  # eps = k (x - sqrt(a) MU)
        m = c1 * (1 - np.sqrt(1 - a) * k) / np.sqrt(a) + c2
        mean = m * mean + c1 * np.sqrt(1 - a) * k * MU
        var = m**2 * var + (beta if i > 0 else 0.0)
    return mean, var


def test_ddpm_sample_distribution(diffusion):
    mean, var = ddpm_moments(100)
    assert mean == pytest.approx(MU, abs=0.01) and var == pytest.approx(S**2, rel=0.05)
    n = 256 * 64
    gen = torch.Generator().manual_seed(0)
    out = SAMPLERS["ddpm"](diffusion, gaussian_model(), noise_like(1024), 100, generator=gen)
    assert abs(out.mean().item() - mean) < 4 * np.sqrt(var / n)
    assert abs(out.var().item() - var) < 4 * var * np.sqrt(2 / n)


def euler_ancestral_moments(num_steps):
    """Exact mean and variance of Euler ancestral's output on the Gaussian model, derived in its own
    variables: x~ = x / sqrt(abar), s^2 = (1 - abar) / abar, D = MU + k (x~ - MU) with
    k = S^2 / (S^2 + s^2); a step makes u = x~ - MU into g u + s_up z with
    g = 1 + (s_down / s - 1)(1 - k), so the moments of u follow a linear recursion."""
    kept = sorted(space_timesteps(1000, str(num_steps)))
    s = np.sqrt((1 - ABAR[kept]) / ABAR[kept])
    mean, var = -MU, 1 / ABAR[kept[-1]]  # u_T for x_T ~ N(0, 1)
    for i in range(len(kept) - 1, -1, -1):
        s_next = s[i - 1] if i > 0 else 0.0
        s_up = s_next * np.sqrt(1 - s_next**2 / s[i] ** 2)
        s_down = np.sqrt(s_next**2 - s_up**2)
        g = 1 + (s_down / s[i] - 1) * (1 - S**2 / (S**2 + s[i] ** 2))
        mean, var = g * mean, g**2 * var + s_up**2
    return MU + mean, var


def test_euler_ancestral_sample_distribution(diffusion):
    """The sampler's moments are the recursion's; the recursion tends to the data's moments with
    many steps and is under-dispersed with few (variance 0.16 at 25 steps, 0.22 at 100, S^2 = 0.25),
    as samplers with DDIM's eta = 1 noise are."""
    assert euler_ancestral_moments(1000)[1] == pytest.approx(S**2, rel=0.02)
    mean, var = euler_ancestral_moments(25)
    assert mean == pytest.approx(MU, abs=1e-4) and var == pytest.approx(0.1635, abs=1e-4)
    n = 1024 * 16
    gen = torch.Generator().manual_seed(0)
    out = SAMPLERS["euler_ancestral"](
        diffusion, gaussian_model(), noise_like(1024), 25, generator=gen
    )
    assert abs(out.mean().item() - mean) < 4 * np.sqrt(var / n)
    assert abs(out.var().item() - var) < 4 * var * np.sqrt(2 / n)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler_ancestral"])
def test_random_samplers_are_deterministic_given_the_generator(diffusion, name):
    options = {"eta": 1.0} if name == "ddim" else {}
    run = lambda seed: SAMPLERS[name](
        diffusion,
        gaussian_model(),
        noise_like(4),
        20,
        generator=torch.Generator().manual_seed(seed),
        **options,
    )
    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert (run(0) - run(1)).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("target", ["x0", "v"])
def test_mean_types_give_the_same_samples(name, target):
    noise = noise_like(4)
    eps_diffusion = create_diffusion("", learn_sigma=False)
    other = create_diffusion(
        "", learn_sigma=False, predict_xstart=target == "x0", predict_v=target == "v"
    )
    run = lambda d, model: SAMPLERS[name](
        d, model, noise, 20, generator=torch.Generator().manual_seed(0)
    )
    expected = run(eps_diffusion, gaussian_model())
    torch.testing.assert_close(run(other, gaussian_model(target)), expected, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_learned_sigma_models_use_the_first_channels(diffusion, learned, name):
    noise = noise_like(4)
    expected = SAMPLERS[name](diffusion, gaussian_model(), noise, 15)
    got = SAMPLERS[name](learned, gaussian_model(learned=True), noise, 15)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_ddpm_with_learned_variance_at_its_upper_end_equals_fixed_large(diffusion, learned):
    model = gaussian_model()
    upper = lambda x, t: torch.cat([model(x, t), torch.ones_like(x)], dim=1)  # log var = log beta
    run = lambda d, m: SAMPLERS["ddpm"](
        d, m, noise_like(4), 25, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(run(learned, upper), run(diffusion, model), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "name,steps,expected",
    [
        ("ddpm", 10, sorted(space_timesteps(1000, "10"))),
        ("ddim", 50, list(range(0, 1000, 20))),
        ("plms", 30, list(range(0, 1000, 34))),
        ("pndm", 10, sorted({*range(0, 1000, 100), 850, 750, 650})),  # + Runge-Kutta midpoints
        ("euler_ancestral", 10, sorted(space_timesteps(1000, "10"))),
        ("ddim", 600, sorted(space_timesteps(1000, "600"))),  # no stride gives 600 steps
        ("dpm_solver++", 10, [0, 5, 22, 73, 202, 410, 603, 757, 886, 999]),  # logSNR grid
        ("dpm_solver++", 1, [999]),
    ],
)
def test_model_sees_original_timesteps_and_kwargs(diffusion, name, steps, expected):
    seen = []
    model = gaussian_model(seen=seen)
    SAMPLERS[name](diffusion, model, noise_like(2), steps, model_kwargs={"y": 7, "cfg_scale": 1.5})
    timesteps = [t for t, _ in seen]
    assert all(t.dtype == torch.long and t.shape == (2,) for t in timesteps)
    assert sorted({int(t[0]) for t in timesteps}) == expected
    assert all(kwargs == {"y": 7, "cfg_scale": 1.5} for _, kwargs in seen)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_and_clipping(diffusion, name):
    calls = []
    callback = lambda i, t, x, x0: calls.append((i, t, x.clone(), x0.clone()))
    noise = 3 * noise_like(2)
    out = SAMPLERS[name](
        diffusion,
        gaussian_model(),
        noise,
        8,
        clip_denoised=True,
        callback=callback,
        generator=torch.Generator().manual_seed(0),
    )
    assert [c[0] for c in calls] == list(range(8))
    ts = [c[1] for c in calls]
    assert ts == sorted(ts, reverse=True) and ts[-1] == 0
    assert all(c[3].abs().max() <= 1 for c in calls)
    torch.testing.assert_close(calls[-1][2], out)


def test_respaced_input_diffusion_gives_the_same_samples():
    noise = noise_like(4)
    full = create_diffusion("", learn_sigma=False)
    spaced = create_diffusion("250", learn_sigma=False)
    for name in ["ddim", "dpm_solver++"]:
        a = SAMPLERS[name](full, gaussian_model(), noise, 25)
        torch.testing.assert_close(SAMPLERS[name](spaced, gaussian_model(), noise, 25), a)


def test_float32_shapes_and_dtypes(diffusion):
    noise = noise_like(2, dtype=torch.float32)
    for name, fn in SAMPLERS.items():
        out = fn(diffusion, gaussian_model(), noise, 5, generator=torch.Generator())
        assert out.shape == noise.shape and out.dtype == torch.float32, name


def test_registry_and_progress_bar(diffusion, capsys):
    assert {"ddpm", "ddim", "plms", "dpm_solver++"} <= set(SAMPLERS)
    SAMPLERS["plms"](diffusion, gaussian_model(), noise_like(1), 3, progress=True)
    assert "0/3" in capsys.readouterr().err
    SAMPLERS["plms"](diffusion, gaussian_model(), noise_like(1), 3)
    assert capsys.readouterr().err == ""


def test_bad_options_and_names(diffusion):
    with pytest.raises(TypeError, match="eta"):
        SAMPLERS["plms"](diffusion, gaussian_model(), noise_like(1), 5, eta=0.5)
    with pytest.raises(TypeError, match="guidance"):
        SAMPLERS["ddim"](diffusion, gaussian_model(), noise_like(1), 5, guidance=2.0)
    with pytest.raises(ValueError, match="num_steps"):
        SAMPLERS["ddpm"](diffusion, gaussian_model(), noise_like(1), 0)
    with pytest.raises(ValueError, match="num_steps"):
        SAMPLERS["dpm_solver++"](diffusion, gaussian_model(), noise_like(1), 1001)
    with pytest.raises(ValueError, match="eta"):
        SAMPLERS["ddim"](diffusion, gaussian_model(), noise_like(1), 5, eta=-1.0)
    with pytest.raises(ValueError, match="grid must be one of"):
        SAMPLERS["dpm_solver++"](diffusion, gaussian_model(), noise_like(1), 5, grid="uniform")
    assert get_sampler("ddim") is SAMPLERS["ddim"]
    with pytest.raises(ValueError, match="did you mean 'ddpm'"):
        get_sampler("ddmp")
