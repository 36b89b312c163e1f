"""Timestep sampling modes, the TimestepSampler facade, loss_by_region and the plot script.

Expected numbers come from the formulas (SpeeD arXiv 2405.17403, ADM, SD3) computed here in
float64 numpy, independently of the code under test.
"""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from speed.diffusion.timesteps import build_timestep_sampler, loss_by_region

T = 1000


def linear_abar():
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, T, dtype=np.float64))


def cosine_abar():
    f = lambda t: np.cos(((t / T) + 0.008) / 1.008 * np.pi / 2) ** 2
    t = np.arange(T, dtype=np.float64)
    return np.cumprod(1.0 - np.minimum(1.0 - f(t + 1) / f(t), 0.999))


def kept_250():
    """guided-diffusion's "250" respacing: round(i * 999 / 249) for i < 250."""
    return np.array(sorted({round(i * (T - 1) / 249) for i in range(250)}))


def bucket_masses(indices_timesteps, probs, regions=10):
    return np.bincount(indices_timesteps * regions // T, weights=probs, minlength=regions)


# ---- SpeeD: pivot, asymmetric and dual sampling -------------------------------------------


def test_pivot_is_642_for_the_linear_schedule():
    assert build_timestep_sampler(linear_abar(), faster=True).pivot == 642


def test_pivot_is_computed_from_the_cosine_schedule():
    abar = cosine_abar()
    expected = int(np.argmax(np.gradient(np.sqrt(1 - abar)) < 1e-4)) + 1
    sampler = build_timestep_sampler(abar, faster=True)
    assert sampler.pivot == expected
    assert sampler.pivot != 642


@pytest.mark.parametrize("k", [5.0, 10.0, 2.0])
def test_asymmetric_probs_are_k_to_one_across_tau(k):
    sampler = build_timestep_sampler(linear_abar(), faster=True, k=k)
    probs = sampler.probs
    assert probs.dtype == np.float64 and probs.shape == (T,)
    np.testing.assert_allclose(probs[:700], k / (k * 700 + 300), rtol=1e-14)
    np.testing.assert_allclose(probs[700:], 1 / (k * 700 + 300), rtol=1e-14)
    assert probs[699] / probs[700] == pytest.approx(k, rel=1e-14)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_dual_steps_mirror_about_m():
    sampler = build_timestep_sampler(linear_abar(), faster=True)
    t, _ = sampler.sample(9, "cpu", generator=torch.Generator().manual_seed(3))
    assert t.dtype == torch.long and t.shape == (9,)
    base = torch.multinomial(
        torch.from_numpy(sampler.probs),
        5,
        replacement=True,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(t[:5], base)
    assert torch.equal(t[5:], (t[:4] - 642).abs())
    every = torch.arange(T)
    assert torch.equal(sampler.sampling.dual_of(every), (every - 642).abs())


def test_empirical_frequencies_match_probs():
    n = 200_000
    abar = linear_abar()
    no_dual = build_timestep_sampler(abar, sampling="no_dual")
    t, _ = no_dual.sample(n, "cpu", generator=torch.Generator().manual_seed(0))
    empirical = np.bincount(t.numpy(), minlength=T) / n
    steps = np.arange(T)
    np.testing.assert_allclose(
        bucket_masses(steps, empirical), bucket_masses(steps, no_dual.probs), atol=0.01
    )

    speed = build_timestep_sampler(abar, faster=True)
    t, _ = speed.sample(n, "cpu", generator=torch.Generator().manual_seed(1))
    first = n // 2 + 1
    mirrored = np.bincount(np.abs(steps - 642), weights=speed.probs, minlength=T)
    expected = (first * speed.probs + (n - first) * mirrored) / n
    empirical = np.bincount(t.numpy(), minlength=T) / n
    np.testing.assert_allclose(
        bucket_masses(steps, empirical), bucket_masses(steps, expected), atol=0.01
    )
    np.testing.assert_allclose(speed.effective_probs, 0.5 * (speed.probs + mirrored), rtol=1e-12)


def test_sample_returns_float32_weights_of_the_drawn_steps():
    sampler = build_timestep_sampler(linear_abar(), faster=True)
    t, w = sampler.sample(64, torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert w.dtype == torch.float32 and w.shape == (64,)
    np.testing.assert_allclose(w.numpy(), sampler.weights[t.numpy()].astype(np.float32))
    plain = build_timestep_sampler(linear_abar())
    assert plain.weights is None
    assert torch.equal(plain.sample(16, "cpu")[1], torch.ones(16))


def test_tanh_variant_is_a_five_to_one_step_at_m_with_dual():
    sampler = build_timestep_sampler(linear_abar(), sampling="tanh", weighting="p2")
    probs = sampler.probs
    assert probs[0] / probs[-1] == pytest.approx(5.0, rel=1e-9)
    assert probs[600] == pytest.approx(probs[0], rel=1e-9)
    assert probs[700] == pytest.approx(probs[-1], rel=1e-9)
    np.testing.assert_allclose(sampler.weights, 1.0 - linear_abar(), rtol=1e-12)
    t, _ = sampler.sample(7, "cpu", generator=torch.Generator().manual_seed(0))
    assert torch.equal(t[4:], (t[:3] - 642).abs())


# ---- other sampling modes -------------------------------------------------------------------


def test_lognorm_puts_normal_mass_on_minus_half_log_snr():
    abar = linear_abar()
    x = -0.5 * np.log(abar / (1 - abar))
    for mean, std, sigmas, mass in [(0.0, 1.0, 1, 0.682689), (0.5, 1.0, 2, 0.954500)]:
        probs = build_timestep_sampler(
            abar, sampling="lognorm", lognorm_mean=mean, lognorm_std=std
        ).probs
        inside = np.abs(x - mean) <= sigmas * std
        assert probs[inside].sum() == pytest.approx(mass, abs=0.01)


def test_clts_moves_from_uniform_to_the_gaussian():
    sampler = build_timestep_sampler(
        linear_abar(), sampling="clts", clts_mean=0.3, clts_std=0.2, clts_steps=100
    )
    np.testing.assert_allclose(sampler.probs, 1 / T, rtol=1e-14)
    u = np.arange(T) / T
    gauss = np.exp(-0.5 * ((u - 0.3) / 0.2) ** 2)
    gauss /= gauss.sum()
    sampler.set_step(25)
    np.testing.assert_allclose(sampler.probs, 0.25 * gauss + 0.75 / T, rtol=1e-12)
    sampler.set_step(10_000)  # past clts_steps the mix stays at 1: no negative probabilities
    np.testing.assert_allclose(sampler.probs, gauss, rtol=1e-12)
    assert sampler.state_dict() == {"step": 10_000}
    fresh = build_timestep_sampler(linear_abar(), sampling="clts", clts_std=0.2, clts_steps=100)
    fresh.load_state_dict(sampler.state_dict())
    np.testing.assert_allclose(fresh.probs, sampler.probs, rtol=0)


def test_loss_second_moment_history_and_unbiased_weights(tmp_path):
    sampler = build_timestep_sampler(linear_abar(), sampling="loss_second_moment")
    np.testing.assert_allclose(sampler.probs, 1 / T)
    sampler.update_with_losses(torch.full((12,), 3), torch.arange(12.0))
    history = sampler.state_dict()["history"]
    np.testing.assert_array_equal(history[3].numpy(), np.arange(2.0, 12.0))
    np.testing.assert_allclose(sampler.probs, 1 / T)  # not warmed up: uniform, weights 1
    assert torch.equal(sampler.sample(4, "cpu")[1], torch.ones(4))

    losses = 1.0 + np.arange(T) / 100.0
    steps = torch.arange(T).repeat(10)
    sampler.update_with_losses(steps, torch.from_numpy(losses).repeat(10))
    expected = 0.999 * losses / losses.sum() + 0.001 / T
    np.testing.assert_allclose(sampler.probs, expected, rtol=1e-12)
    importance = 1.0 / (T * sampler.probs)
    assert np.sum(sampler.probs * importance * losses) == pytest.approx(losses.mean(), rel=1e-12)

    n = 200_000
    t, w = sampler.sample(n, "cpu", generator=torch.Generator().manual_seed(0))
    estimate = w.double().numpy() * losses[t.numpy()]
    assert abs(estimate.mean() - losses.mean()) < 4 * estimate.std() / np.sqrt(n)

    path = tmp_path / "state.pt"
    torch.save(sampler.state_dict(), path)
    resumed = build_timestep_sampler(linear_abar(), sampling="loss_second_moment")
    resumed.load_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_allclose(resumed.probs, sampler.probs, rtol=0)


def _gather_worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    sampler = build_timestep_sampler(linear_abar(), sampling="loss_second_moment")
    t = torch.tensor([10, 20]) if rank == 0 else torch.tensor([30, 40, 50])
    sampler.update_with_losses(t, t.double() / 10)
    torch.save(sampler.state_dict(), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_loss_second_moment_gathers_losses_across_ranks(tmp_path):
    mp.spawn(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert state["counts"].nonzero().flatten().tolist() == [10, 20, 30, 40, 50]
        np.testing.assert_allclose(state["history"][[10, 30, 50], 0].numpy(), [1.0, 3.0, 5.0])


# ---- respacing, config resolution, bad values --------------------------------------------


def test_respaced_probs_cover_kept_indices_with_tau_on_original_timesteps():
    kept = kept_250()
    sampler = build_timestep_sampler(linear_abar()[kept], kept, faster=True)
    below = kept < 700
    probs = sampler.probs
    assert probs.shape == (250,)
    np.testing.assert_allclose(probs[below], 5 / (5 * below.sum() + (~below).sum()), rtol=1e-14)
    np.testing.assert_allclose(probs[~below], 1 / (5 * below.sum() + (~below).sum()), rtol=1e-14)
    assert sampler.weights.shape == (250,)
    np.testing.assert_array_equal(sampler.weights[~below], 1.0)
    dual = sampler.sampling.dual_of(torch.arange(250)).numpy()
    target = np.abs(kept - sampler.pivot)
    assert np.all(np.abs(kept[dual] - target) <= 2)  # nearest kept step to |t - M|, spacing ~4
    assert abs(sampler.pivot - 642) <= 4


def test_faster_sets_defaults_that_explicit_modes_override():
    abar = linear_abar()
    full = build_timestep_sampler(abar, faster=True)
    assert (full.sampling.name, full.weighting.name) == ("speed", "speed")
    mixed = build_timestep_sampler(abar, faster=True, sampling="uniform")
    assert (mixed.sampling.name, mixed.weighting.name) == ("uniform", "speed")
    plain = build_timestep_sampler(abar)
    assert (plain.sampling.name, plain.weighting.name) == ("uniform", "none")
    text = full.describe()
    for part in ("M=642", "k=5", "lam=0.6", "tau=700"):
        assert part in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"lam": 5}, "lam"),
        ({"lam": 0.4}, "lam"),
        ({"tau": 1001}, "tau"),
        ({"tau": -1}, "tau"),
        ({"k": 0}, "k"),
        ({"k": -2}, "k"),
        ({"sampling": "spede"}, "speed"),
        ({"weighting": "minsnr"}, "min_snr"),
        ({"p2gamma": 1.0}, "p2_gamma"),
        ({"weighting": "min_snr", "min_snr_target": "score"}, "min_snr_target"),
        ({"sampling": "lognorm", "lognorm_std": 0}, "lognorm_std"),
    ],
)
def test_bad_values_raise_one_line(kwargs, word):
    with pytest.raises(ValueError) as info:
        build_timestep_sampler(linear_abar(), faster=True, **kwargs)
    message = str(info.value)
    assert word in message and "\n" not in message


def test_bad_schedule_raises():
    with pytest.raises(ValueError, match="strictly increasing"):
        build_timestep_sampler(linear_abar()[:3], [0, 5, 5])


# ---- loss by region and the plots -------------------------------------------------------------


def test_loss_by_region_means_per_bucket():
    t = torch.tensor([0, 99, 100, 999, 550, 560])
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 7.0])
    assert loss_by_region(t, losses) == {
        "loss_t/000-099": 1.5,
        "loss_t/100-199": 3.0,
        "loss_t/500-599": 6.0,
        "loss_t/900-999": 4.0,
    }
    assert loss_by_region(torch.tensor([0, 3]), torch.tensor([1.0, 2.0]), 4, 2) == {
        "loss_t/000-001": 1.0,
        "loss_t/002-003": 2.0,
    }
