"""GaussianDiffusion against closed forms computed independently in float64 numpy
(Ho et al. 2020; Nichol & Dhariwal 2021; Song et al. 2021), and create_diffusion's wiring."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

import speed.diffusion as diffusion_pkg
from speed.diffusion import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    create_diffusion,
)

F64 = torch.float64
BETAS = np.linspace(1e-4, 0.02, 1000)  # Ho et al. 2020's linear schedule
ABAR = np.cumprod(1.0 - BETAS)
ABAR_PREV = np.append(1.0, ABAR[:-1])
POST_VAR = BETAS * (1.0 - ABAR_PREV) / (1.0 - ABAR)


def make(mean=ModelMeanType.EPSILON, var=ModelVarType.FIXED_SMALL, loss=LossType.MSE, betas=BETAS):
    return GaussianDiffusion(betas=betas, model_mean_type=mean, model_var_type=var, loss_type=loss)


def col(values, t):
    """numpy table values at timesteps t, as a float64 [N, 1, 1, 1] tensor."""
    return torch.as_tensor(np.asarray(values)[t.numpy()], dtype=F64).reshape(-1, 1, 1, 1)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 2, 3, 3, generator=g, dtype=F64) * 2 - 1
    noise = torch.randn(4, 2, 3, 3, generator=g, dtype=F64)
    t = torch.tensor([0, 1, 500, 999])
    return x0, noise, t


def true_model(x0, target="eps"):
    """A perfect model for data x0: recovers eps from x_t, returns the requested target."""

    def model(x, t, **kwargs):
        a, a_prev, beta = col(ABAR, t), col(ABAR_PREV, t), col(BETAS, t)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        if target == "eps":
            return eps
        if target == "x0":
            return x0
        if target == "v":
            return a.sqrt() * eps - (1 - a).sqrt() * x0
        # x_{t-1}: the posterior mean (Ho et al. 2020, eq. 7)
        return (beta * a_prev.sqrt() * x0 + (1 - a_prev) * (1 - beta).sqrt() * x) / (1 - a)

    return model


def test_tables_are_float64_and_extract_follows_x_dtype(batch):
    d = make()
    assert d.alphas_cumprod.dtype == np.float64
    np.testing.assert_allclose(d.alphas_cumprod, ABAR, rtol=1e-12)
    x0, noise, t = batch
    assert d.q_sample(x0, t, noise).dtype == F64
    assert d.q_sample(x0.float(), t, noise.float()).dtype == torch.float32


def test_q_sample_and_q_mean_variance_closed_form(batch):
    x0, noise, t = batch
    d = make()
    expected = col(ABAR, t).sqrt() * x0 + (1 - col(ABAR, t)).sqrt() * noise
    torch.testing.assert_close(d.q_sample(x0, t, noise), expected, rtol=1e-12, atol=1e-12)
    mean, var, log_var = d.q_mean_variance(x0, t)
    torch.testing.assert_close(mean, col(ABAR, t).sqrt() * x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, (1 - col(ABAR, t)).expand_as(x0), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(log_var, torch.log(var), rtol=1e-10, atol=1e-12)


def test_q_sample_empirical_moments():
    d = make()
    torch.manual_seed(0)
    t = torch.tensor([10, 300, 900])
    x0 = torch.tensor([0.8, -0.4, 0.5], dtype=F64).reshape(3, 1, 1, 1).repeat(1, 1, 100, 100)
    x_t = d.q_sample(x0, t)
    a = ABAR[t.numpy()]
    np.testing.assert_allclose(x_t.mean((1, 2, 3)), np.sqrt(a) * [0.8, -0.4, 0.5], atol=0.04)
    np.testing.assert_allclose(x_t.var((1, 2, 3)), 1 - a, rtol=0.05)
    mean, var, _ = d.q_mean_variance(x0, t)
    np.testing.assert_allclose(x_t.mean((1, 2, 3)), mean.mean((1, 2, 3)), atol=0.04)
    np.testing.assert_allclose(x_t.var((1, 2, 3)), var.mean((1, 2, 3)), rtol=0.05)


def test_posterior_matches_bayes_rule(batch):
    """q(x_{t-1} | x_t, x_0) from Gaussian conditioning (precisions add) for t >= 1."""
    x0, noise, _ = batch
    t = torch.tensor([1, 2, 400, 999])
    d = make()
    x_t = d.q_sample(x0, t, noise)
    beta, alpha, abar_prev = col(BETAS, t), 1 - col(BETAS, t), col(ABAR_PREV, t)
    var = 1.0 / (alpha / beta + 1.0 / (1.0 - abar_prev))
    mean = var * (alpha.sqrt() / beta * x_t + abar_prev.sqrt() / (1.0 - abar_prev) * x0)
    got_mean, got_var, got_log_var = d.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(got_mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got_var, var.expand_as(x0), rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(got_log_var, torch.log(var).expand_as(x0), rtol=1e-9, atol=1e-9)


def test_posterior_at_t0_is_x0_with_clipped_log_variance(batch):
    x0, noise, _ = batch
    t = torch.zeros(4, dtype=torch.long)
    d = make()
    mean, var, log_var = d.q_posterior_mean_variance(x0, d.q_sample(x0, t, noise), t)
    torch.testing.assert_close(mean, x0, rtol=1e-12, atol=1e-12)
    assert var.abs().max() == 0
    torch.testing.assert_close(log_var, torch.full_like(x0, np.log(POST_VAR[1])))


@pytest.mark.parametrize(
    "var_type,expected",
    [
        (ModelVarType.FIXED_SMALL, np.append(POST_VAR[1], POST_VAR[1:])),
        (ModelVarType.FIXED_LARGE, np.append(POST_VAR[1], BETAS[1:])),
    ],
)
def test_fixed_variances(batch, var_type, expected):
    x0, noise, t = batch
    d = make(var=var_type)
    x_t = d.q_sample(x0, t, noise)
    out = d.p_mean_variance(true_model(x0), x_t, t)
    log_expected = torch.log(col(expected, t)).expand_as(x0)
    torch.testing.assert_close(out["log_variance"], log_expected, rtol=1e-9, atol=1e-12)


def test_learned_range_interpolates_log_variances(batch):
    x0, noise, t = batch
    d = make(var=ModelVarType.LEARNED_RANGE)
    x_t = d.q_sample(x0, t, noise)
    lo = np.log(np.append(POST_VAR[1], POST_VAR[1:]))
    for v, frac in [(-1.0, 0.0), (1.0, 1.0), (0.0, 0.5)]:
        model = lambda x, tt, v=v: torch.cat([true_model(x0)(x, tt), torch.full_like(x, v)], 1)
        out = d.p_mean_variance(model, x_t, t)
        expected = col(frac * np.log(BETAS) + (1 - frac) * lo, t).expand_as(x0)
        torch.testing.assert_close(out["log_variance"], expected, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out["pred_xstart"], x0, rtol=1e-7, atol=1e-7)
    with pytest.raises(ValueError, match="4 channels"):
        d.p_mean_variance(true_model(x0), x_t, t)


@pytest.mark.parametrize(
    "mean_type,target",
    [
        (ModelMeanType.EPSILON, "eps"),
        (ModelMeanType.START_X, "x0"),
        (ModelMeanType.VELOCITY, "v"),
        (ModelMeanType.PREVIOUS_X, "xprev"),
    ],
)
def test_every_mean_type_recovers_x0_from_its_true_target(batch, mean_type, target):
    x0, noise, t = batch
    d = make(mean=mean_type)
    x_t = d.q_sample(x0, t, noise)
    out = d.p_mean_variance(true_model(x0, target), x_t, t, clip_denoised=False)
    torch.testing.assert_close(out["pred_xstart"], x0, rtol=1e-6, atol=1e-6)
    posterior_mean = d.q_posterior_mean_variance(x0, x_t, t)[0]
    torch.testing.assert_close(out["mean"], posterior_mean, rtol=1e-6, atol=1e-6)


def test_denoised_fn_then_clipping(batch):
    x0, noise, t = batch
    d = make(mean=ModelMeanType.START_X)
    model = lambda x, tt: x0
    out = d.p_mean_variance(model, x0, t, clip_denoised=True, denoised_fn=lambda z: 3 * z)
    torch.testing.assert_close(out["pred_xstart"], (3 * x0).clamp(-1, 1))


def test_p_sample_noise_and_last_step(batch):
    x0, noise, t = batch
    d = make(var=ModelVarType.FIXED_LARGE)
    x_t = d.q_sample(x0, t, noise)
    out = d.p_sample(true_model(x0), x_t, t, generator=torch.Generator().manual_seed(3))
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    mean = d.q_posterior_mean_variance(x0, x_t, t)[0]
    std = col(np.append(POST_VAR[1], BETAS[1:]), t).sqrt() * (t != 0).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out["sample"], mean + std * z, rtol=1e-6, atol=1e-6)


def test_ddim_step_formula_with_eta(batch):
    """eta = 1 gives sigma^2 = beta~_t (Song et al. 2021, sec. 4.3)."""
    x0, noise, _ = batch
    t = torch.tensor([1, 2, 500, 999])
    d = make()
    x_t = d.q_sample(x0, t, noise)
    for eta in (0.0, 1.0):
        gen = torch.Generator().manual_seed(5)
        out = d.ddim_sample(true_model(x0), x_t, t, clip_denoised=False, eta=eta, generator=gen)
        z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
        var = eta**2 * col(POST_VAR, t)
        a_prev = col(ABAR_PREV, t)
        expected = a_prev.sqrt() * x0 + (1 - a_prev - var).sqrt() * noise + var.sqrt() * z
        torch.testing.assert_close(out["sample"], expected, rtol=1e-6, atol=1e-6)


def test_ddim_reverse_sample_lands_on_the_next_marginal(batch):
    x0, noise, t = batch
    t = t.clamp(max=998)
    d = make()
    out = d.ddim_reverse_sample(true_model(x0), d.q_sample(x0, t, noise), t, clip_denoised=False)
    torch.testing.assert_close(out["sample"], d.q_sample(x0, t + 1, noise), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="eta must be 0"):
        d.ddim_reverse_sample(true_model(x0), x0, t, eta=0.5)


def test_ddim_loop_recovers_x0_and_p_sample_loop_runs(batch):
    x0, noise, _ = batch
    d = make(betas=BETAS[:50])  # a short diffusion; the true model uses the same first 50 steps
    out = d.ddim_sample_loop(true_model(x0), x0.shape, noise=noise, clip_denoised=False)
    torch.testing.assert_close(out, x0, rtol=1e-8, atol=1e-8)
    gen = torch.Generator().manual_seed(0)
    ancestral = d.p_sample_loop(true_model(x0), x0.shape, noise, clip_denoised=False, generator=gen)
    torch.testing.assert_close(ancestral, x0, rtol=1e-8, atol=1e-8)


# ---- training losses -------------------------------------------------------------------------


def test_mse_of_a_zero_model_is_the_mean_squared_noise(batch):
    x0, noise, t = batch
    d = make()
    terms = d.training_losses(lambda x, tt: torch.zeros_like(x), x0, t, noise=noise)
    expected = (noise**2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["mse"], expected)
    torch.testing.assert_close(terms["loss"], expected)
    assert "vb" not in terms


@pytest.mark.parametrize(
    "mean_type,target", [(ModelMeanType.VELOCITY, "v"), (ModelMeanType.START_X, "x0")]
)
def test_true_targets_have_zero_mse(batch, mean_type, target):
    x0, noise, t = batch
    terms = make(mean=mean_type).training_losses(true_model(x0, target), x0, t, noise=noise)
    assert terms["mse"].abs().max() < 1e-12


def test_weights_multiply_only_the_mse_term(batch):
    x0, noise, t = batch
    d = make(var=ModelVarType.LEARNED_RANGE)
    model = lambda x, tt: torch.cat([0.5 * x, torch.full_like(x, 0.3)], dim=1)
    w = torch.tensor([0.4, 1.0, 2.0, 0.0], dtype=F64)
    plain = d.training_losses(model, x0, t, noise=noise)
    weighted = d.training_losses(model, x0, t, noise=noise, weights=w)
    torch.testing.assert_close(weighted["vb"], plain["vb"])
    torch.testing.assert_close(weighted["mse"], plain["mse"])
    torch.testing.assert_close(weighted["loss"], w * plain["mse"] + plain["vb"])
    with pytest.raises(ValueError, match="weights must have shape"):
        d.training_losses(model, x0, t, noise=noise, weights=w[:2])


def test_vb_term_matches_the_gaussian_kl_in_bits(batch):
    x0, noise, t = batch
    d = make(var=ModelVarType.LEARNED_RANGE)
    eps_hat, v = 0.7 * noise, 0.2
    model = lambda x, tt: torch.cat([eps_hat, torch.full_like(x, v)], dim=1)
    vb = d.training_losses(model, x0, t, noise=noise)["vb"].numpy()
    tn, x0n, nz = t.numpy(), x0.numpy(), noise.numpy()
    a, ap, b = (arr[tn].reshape(-1, 1, 1, 1) for arr in (ABAR, ABAR_PREV, BETAS))
    x_t = np.sqrt(a) * x0n + np.sqrt(1 - a) * nz
    c1, c2 = b * np.sqrt(ap) / (1 - a), (1 - ap) * np.sqrt(1 - b) / (1 - a)
    true_mean, true_lv = c1 * x0n + c2 * x_t, np.log(np.append(POST_VAR[1], POST_VAR[1:]))[tn]
    true_lv = true_lv.reshape(-1, 1, 1, 1)
    x0_hat = (x_t - np.sqrt(1 - a) * 0.7 * nz) / np.sqrt(a)
    model_mean = c1 * x0_hat + c2 * x_t
    model_lv = (v + 1) / 2 * np.log(b) + (1 - v) / 2 * true_lv
    kl = 0.5 * (-1 + model_lv - true_lv + np.exp(true_lv - model_lv))
    kl = kl + 0.5 * (true_mean - model_mean) ** 2 * np.exp(-model_lv)
    kl_bits = kl.mean(axis=(1, 2, 3)) / np.log(2)
    np.testing.assert_allclose(vb[1:], kl_bits[1:], rtol=1e-6)
    # t = 0: the decoder NLL of x0's 8-bit bin under N(model_mean, exp(model_lv)).
    std = np.exp(0.5 * model_lv[0])
    hi = np.where(x0n[0] > 0.999, np.inf, x0n[0] + 1 / 255)
    lo = np.where(x0n[0] < -0.999, -np.inf, x0n[0] - 1 / 255)
    mass = norm.cdf((hi - model_mean[0]) / std) - norm.cdf((lo - model_mean[0]) / std)
    assert vb[0] == pytest.approx(-np.log(mass).mean() / np.log(2), rel=1e-2)


def test_hybrid_loss_stops_the_gradient_of_vb_through_the_mean(batch):
    x0, noise, t = batch
    d = make(var=ModelVarType.LEARNED_RANGE)
    out = torch.cat([0.3 * noise, torch.full_like(noise, 0.1)], dim=1).requires_grad_(True)
    terms = d.training_losses(lambda x, tt: out, x0, t, noise=noise)
    (grad_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    assert grad_vb[:, :2].abs().max() == 0  # eps channels
    assert grad_vb[:, 2:].abs().max() > 0  # variance channels
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), out)
    assert grad_mse[:, 2:].abs().max() == 0 and grad_mse[:, :2].abs().max() > 0


def test_kl_loss_types_and_rescaled_mse(batch):
    x0, noise, t = batch
    betas = np.linspace(1e-3, 0.2, 100)  # T = 100
    model = lambda x, tt: torch.cat([0.5 * x, torch.zeros_like(x)], dim=1)
    terms = {
        loss: make(var=ModelVarType.LEARNED_RANGE, loss=loss, betas=betas).training_losses(
            model, x0, t.clamp(max=99), noise=noise
        )
        for loss in LossType
    }
    vb = terms[LossType.MSE]["vb"]
    torch.testing.assert_close(terms[LossType.KL]["loss"], vb)
    torch.testing.assert_close(terms[LossType.RESCALED_KL]["loss"], 100 * vb)
    torch.testing.assert_close(terms[LossType.RESCALED_MSE]["vb"], 0.1 * vb)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    kl = make(var=ModelVarType.LEARNED_RANGE, loss=LossType.KL, betas=betas)
    weighted = kl.training_losses(model, x0, t.clamp(max=99), noise=noise, weights=w)
    torch.testing.assert_close(weighted["loss"], w * vb)


def test_prior_bpd_closed_form(batch):
    x0 = batch[0]
    a = ABAR[-1]
    m2 = (np.sqrt(a) * x0.numpy()) ** 2
    kl = 0.5 * ((1 - a) + m2 - 1 - np.log(1 - a))  # KL(N(sqrt(a) x0, 1 - a) || N(0, 1))
    np.testing.assert_allclose(make()._prior_bpd(x0), kl.mean(axis=(1, 2, 3)) / np.log(2))


def test_calc_bpd_loop_of_a_perfect_model():
    """Perfect eps model, fixed small variance: every KL term is 0 and only the decoder NLL at
    t = 0 (the last column) remains, that of x0's bin under N(x0, beta~_1)."""
    x0 = torch.tensor([-1.0, -0.2, 0.6, 1.0], dtype=F64).reshape(1, 1, 2, 2)
    d = make(betas=BETAS[:20])
    out = d.calc_bpd_loop(true_model(x0), x0, clip_denoised=False, generator=torch.Generator())
    assert out["vb"].shape == (1, 20)
    assert out["vb"][:, :-1].abs().max() < 1e-9
    assert out["xstart_mse"].abs().max() < 1e-18 and out["mse"].abs().max() < 1e-16
    std = np.sqrt(POST_VAR[1])
    mass = [norm.cdf(1 / 255 / std), 2 * norm.cdf(1 / 255 / std) - 1]  # edge and inner bins
    nll = -np.mean(np.log([mass[0], mass[1], mass[1], mass[0]])) / np.log(2)
    assert out["vb"][0, -1].item() == pytest.approx(nll, rel=1e-3)
    torch.testing.assert_close(out["total_bpd"], out["vb"].sum(1) + out["prior_bpd"])


# ---- create_diffusion ------------------------------------------------------------------------


def test_create_diffusion_types_and_steps():
    d = create_diffusion("")
    assert d.num_timesteps == 1000 and d.original_num_steps == 1000
    assert d.model_mean_type == ModelMeanType.EPSILON
    assert d.model_var_type == ModelVarType.LEARNED_RANGE and d.loss_type == LossType.MSE
    np.testing.assert_allclose(d.alphas_cumprod, ABAR, rtol=1e-12)
    np.testing.assert_array_equal(d.timestep_map, np.arange(1000))
    d = create_diffusion("250", learn_sigma=False, predict_v=True, use_kl=True)
    assert d.num_timesteps == 250 and d.model_var_type == ModelVarType.FIXED_LARGE
    assert d.model_mean_type == ModelMeanType.VELOCITY and d.loss_type == LossType.RESCALED_KL
    np.testing.assert_allclose(d.base_alphas_cumprod, ABAR, rtol=1e-12)
    d = create_diffusion(None, learn_sigma=False, sigma_small=True, predict_xstart=True)
    assert d.model_var_type == ModelVarType.FIXED_SMALL
    assert d.model_mean_type == ModelMeanType.START_X
    with pytest.raises(ValueError, match="at most one"):
        create_diffusion("", predict_xstart=True, predict_v=True)


def test_create_diffusion_builds_the_timestep_sampler(monkeypatch):
    calls = []
    stub = lambda abar, **kwargs: calls.append((abar, kwargs)) or "sampler"
    monkeypatch.setattr(diffusion_pkg, "build_timestep_sampler", stub)
    d = create_diffusion("ddim50", faster=True, k=10, lam=0.7, tau=600, dual_pivot=642)
    assert d.timestep_sampler == "sampler"
    abar, kwargs = calls[0]
    np.testing.assert_allclose(abar, ABAR[::20], rtol=1e-12)
    np.testing.assert_array_equal(kwargs.pop("timestep_map"), np.arange(0, 1000, 20))
    assert kwargs == dict(
        faster=True, sampling=None, weighting=None, k=10, lam=0.7, tau=600, dual_pivot=642
    )


def test_create_diffusion_real_timestep_sampler():
    probs = np.asarray(create_diffusion("").timestep_sampler.probs)
    assert probs.shape == (1000,) and probs.sum() == pytest.approx(1.0)
