"""Gaussian diffusion (DDPM) with guided-diffusion's method names and math.

Notation (index t = 0..T-1 is the paper's step t + 1): beta_t the schedule, alpha_t = 1 - beta_t,
abar_t = prod_{s<=t} alpha_s, abar_{-1} = 1. Per-timestep tables are float64 numpy arrays; they are
gathered at a batch of timesteps and cast to the data's dtype by `_extract_into_tensor`.

- Forward process: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al. 2020, eq. 4).
- Posterior: q(x_{t-1} | x_t, x_0) = N(c1_t x_0 + c2_t x_t, beta~_t I) with
  c1_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t),
  c2_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t),
  beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al. 2020, eq. 6-7).
- Model outputs (`ModelMeanType`): eps, x_0, x_{t-1}, or v = sqrt(abar) eps - sqrt(1 - abar) x_0
  (Salimans & Ho 2022). Variances (`ModelVarType`): beta~_t (fixed small), beta_t (fixed large),
  learned log-variance, or learned interpolation exp(f log beta_t + (1 - f) log beta~_t) with
  f = (v + 1) / 2 (Nichol & Dhariwal 2021, eq. 15).
- Losses (`LossType`): MSE on the model's target (Ho et al. 2020, eq. 14), plus with a learned
  variance the VB term L_vlb computed with a stop-gradient on the mean (the hybrid loss,
  Nichol & Dhariwal 2021, eq. 16); or the VB alone (KL), optionally rescaled by T.
- Sampling: ancestral DDPM (Ho et al. 2020, Alg. 2) and DDIM (Song et al. 2021, eq. 12).
"""

from __future__ import annotations

import enum

import numpy as np
import torch
from tqdm.auto import tqdm

from speed.diffusion.losses import (
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)
from speed.diffusion.training_output import output_terms
from speed.utils.seeding import Generators, randn_rows


class ModelMeanType(enum.Enum):
    """What the network predicts."""

    PREVIOUS_X = enum.auto()  # x_{t-1}
    START_X = enum.auto()  # x_0
    EPSILON = enum.auto()  # the noise eps
    VELOCITY = enum.auto()  # v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0


class ModelVarType(enum.Enum):
    """Which variance the reverse step uses."""

    LEARNED = enum.auto()  # the network outputs log sigma^2
    FIXED_SMALL = enum.auto()  # beta~_t, the posterior variance
    FIXED_LARGE = enum.auto()  # beta_t (beta~_1 at t = 0, for a better decoder likelihood)
    LEARNED_RANGE = enum.auto()  # the network interpolates between log beta~_t and log beta_t


class LossType(enum.Enum):
    MSE = enum.auto()  # MSE (+ VB term when the variance is learned)
    RESCALED_MSE = enum.auto()  # MSE (+ VB term times T / 1000)
    KL = enum.auto()  # the variational bound
    RESCALED_KL = enum.auto()  # the variational bound times T (estimates the full VLB)

    def is_vb(self) -> bool:
        return self in (LossType.KL, LossType.RESCALED_KL)


def _extract_into_tensor(arr, timesteps: torch.Tensor, broadcast_shape, dtype=torch.float32):
    """Gather arr[timesteps] (arr float64 [T], timesteps long [N]) as a `dtype` tensor on the
    timesteps' device, shaped [N, 1, ...] and broadcast to `broadcast_shape` [N, ...]."""
    table = torch.as_tensor(np.asarray(arr)).to(dtype).to(timesteps.device)
    res = table[timesteps]
    return res.reshape(-1, *([1] * (len(broadcast_shape) - 1))).expand(*broadcast_shape)


def _randn(shape, like: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise with `like`'s device and dtype, drawn from `generator` (one, or one
    per sample: `speed.utils.seeding.randn_rows`)."""
    return randn_rows(shape, generator, device=like.device, dtype=like.dtype)


def _last(iterable):
    """The last item of a non-empty iterable."""
    for item in iterable:
        last = item
    return last


class GaussianDiffusion:
    """Training and sampling utilities for a discrete Gaussian diffusion of T = len(betas) steps.

    Args:
        betas: 1-D array of the T forward variances, each in (0, 1].
        model_mean_type, model_var_type, loss_type: see the enums above.
    """

    family = "gaussian"  # the sampler family (`speed.generation.SAMPLER_FAMILIES`)

    def __init__(self, *, betas, model_mean_type, model_var_type, loss_type):
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type

        betas = np.array(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a non-empty 1-D array with values in (0, 1]")
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])
        # Original (unrespaced) schedule and each index's original timestep; SpacedDiffusion
        # overrides these.
        self.timestep_map = np.arange(self.num_timesteps, dtype=np.int64)
        self.original_num_steps = self.num_timesteps
        self.base_betas = betas
        self.timestep_sampler = None  # set by create_diffusion

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.base_alphas_cumprod = self.alphas_cumprod
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        # q(x_t | x_0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)

        # q(x_{t-1} | x_t, x_0); beta~_0 = 0, so its log is clipped to beta~_1 (beta_0 if T = 1)
        abar, abar_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        self._variance_floor = self.posterior_variance[1] if self.num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(
            np.append(self._variance_floor, self.posterior_variance[1:])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(abar_prev) / (1.0 - abar)
        self.posterior_mean_coef2 = (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)

    def _extract(self, arr, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _extract_into_tensor(arr, t, x.shape, dtype=x.dtype)

    # ---- forward process -------------------------------------------------------------------

    def q_mean_variance(self, x_start, t):
        """Mean, variance and log-variance of q(x_t | x_0), each shaped like x_start [N, ...]."""
        mean = self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = self._extract(1.0 - self.alphas_cumprod, t, x_start)
        log_variance = self._extract(self.log_one_minus_alphas_cumprod, t, x_start)
        return mean, variance, log_variance

    def q_sample(self, x_start, t, noise=None):
        """Draw x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (noise ~ N(0, I) if not given)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x_start {tuple(x_start.shape)}")
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
            + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7)."""
        mean = (
            self._extract(self.posterior_mean_coef1, t, x_t) * x_start
            + self._extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = self._extract(self.posterior_variance, t, x_t)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # ---- reverse process -------------------------------------------------------------------

    @property
    def learns_variance(self) -> bool:
        """Whether the model outputs a variance too (2C channels)."""
        return self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE)

    @staticmethod
    def _split_learned(model_output, x):
        """Split a learned-variance output [N, 2C, ...] into mean part and variance values."""
        c = x.shape[1]
        if model_output.shape != (x.shape[0], 2 * c, *x.shape[2:]):
            raise ValueError(
                f"a learned-variance model must output {2 * c} channels (mean and variance), "
                f"got shape {tuple(model_output.shape)} for input {tuple(x.shape)}"
            )
        return torch.split(model_output, c, dim=1)

    def _split_output(self, model_output, x, t):
        """Split the network output into (mean part [N, C, ...], variance, log-variance)."""
        if self.learns_variance:
            model_output, var_values = self._split_learned(model_output, x)
            if self.model_var_type == ModelVarType.LEARNED:
                log_variance = var_values
            else:
                min_log = self._extract(self.posterior_log_variance_clipped, t, x)
                max_log = self._extract(np.log(self.betas), t, x)
                frac = (var_values + 1) / 2  # var_values in [-1, 1] spans [beta~_t, beta_t]
                log_variance = frac * max_log + (1 - frac) * min_log
            return model_output, torch.exp(log_variance), log_variance
        if self.model_var_type == ModelVarType.FIXED_LARGE:
            variance = np.append(self._variance_floor, self.betas[1:])
            log_variance = np.log(variance)
        else:
            variance, log_variance = self.posterior_variance, self.posterior_log_variance_clipped
        return model_output, self._extract(variance, t, x), self._extract(log_variance, t, x)

    def p_mean_variance(
        self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None
    ) -> dict:
        """Apply the model at (x [N, C, ...], t long [N]): p(x_{t-1} | x_t) and x_0's estimate.

        Args:
            clip_denoised: clamp the x_0 prediction to [-1, 1].
            denoised_fn: optional map applied to the x_0 prediction before clipping.
        Returns:
            dict with "mean", "variance", "log_variance", "pred_xstart" (each shaped like x).
        """
        model_output = model(x, t, **(model_kwargs or {}))
        if isinstance(model_output, dict):
            raise ValueError(
                "a masked backbone's training output has no reverse step: train it with an MSE "
                "loss (diffusion.use_kl=false)"
            )
        model_output, variance, log_variance = self._split_output(model_output, x, t)

        def process_xstart(x0):
            if denoised_fn is not None:
                x0 = denoised_fn(x0)
            return x0.clamp(-1, 1) if clip_denoised else x0

        to_xstart = {
            ModelMeanType.PREVIOUS_X: self._predict_xstart_from_xprev,
            ModelMeanType.START_X: lambda x_t, t, x0: x0,
            ModelMeanType.EPSILON: self._predict_xstart_from_eps,
            ModelMeanType.VELOCITY: self._predict_xstart_from_v,
        }[self.model_mean_type]
        pred_xstart = process_xstart(to_xstart(x, t, model_output))
        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            mean = model_output
        else:
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
        }

    def _predict_xstart_from_eps(self, x_t, t, eps):
        """x_0 = x_t / sqrt(abar_t) - sqrt(1 / abar_t - 1) eps."""
        return (
            self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
        """eps = (x_t / sqrt(abar_t) - x_0) / sqrt(1 / abar_t - 1)."""
        return (
            self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart
        ) / self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def _predict_xstart_from_xprev(self, x_t, t, xprev):
        """Invert the posterior mean: x_0 = (x_{t-1} - c2_t x_t) / c1_t."""
        return (
            self._extract(1.0 / self.posterior_mean_coef1, t, x_t) * xprev
            - self._extract(self.posterior_mean_coef2 / self.posterior_mean_coef1, t, x_t) * x_t
        )

    def _predict_xstart_from_v(self, x_t, t, v):
        """x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v (Salimans & Ho 2022)."""
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x_t) * x_t
            - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * v
        )

    def _predict_v(self, x_start, t, noise):
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0, the v-prediction target."""
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x_start) * noise
            - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start
        )

    # ---- sampling --------------------------------------------------------------------------

    def p_sample(
        self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, generator=None
    ) -> dict:
        """One ancestral step x_t -> x_{t-1} = mean + sigma z (no noise at t = 0).
        Returns dict "sample", "pred_xstart"."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        noise = _randn(x.shape, x, generator)
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(
        self,
        model,
        x,
        t,
        clip_denoised=True,
        denoised_fn=None,
        model_kwargs=None,
        eta=0.0,
        generator=None,
    ) -> dict:
        """One DDIM step (Song et al. 2021, eq. 12):
        x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1} - sigma^2) eps + sigma z, with
        sigma = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})."""
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = self._extract(self.alphas_cumprod, t, x)
        abar_prev = self._extract(self.alphas_cumprod_prev, t, x)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        mean = (
            out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
        )
        sample = mean
        if eta != 0:
            nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
            sample = mean + nonzero * sigma * _randn(x.shape, x, generator)
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(
        self, model, x, t, clip_denoised=True, denoised_fn=None, model_kwargs=None, eta=0.0
    ) -> dict:
        """Deterministic DDIM inversion x_t -> x_{t+1} (eta must be 0)."""
        if eta != 0.0:
            raise ValueError("ddim_reverse_sample is deterministic: eta must be 0")
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar_next = self._extract(self.alphas_cumprod_next, t, x)
        sample = out["pred_xstart"] * torch.sqrt(abar_next) + torch.sqrt(1 - abar_next) * eps
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def _loop_progressive(self, step, shape, noise, device, progress, generator):
        """Run `step(x, t)` from t = T-1 down to 0, yielding each step's output dict."""
        if device is None:
            device = noise.device if noise is not None else torch.device("cpu")
        x = noise if noise is not None else randn_rows(shape, generator, device=device)
        for i in tqdm(range(self.num_timesteps)[::-1], disable=not progress, leave=False):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            with torch.no_grad():
                out = step(x, t)
            yield out
            x = out["sample"]

    def p_sample_loop_progressive(
        self,
        model,
        shape,
        noise=None,
        clip_denoised=True,
        denoised_fn=None,
        model_kwargs=None,
        device=None,
        progress=False,
        generator=None,
    ):
        """Yield p_sample's output at every step of ancestral sampling, starting at `noise`."""
        step = lambda x, t: self.p_sample(
            model, x, t, clip_denoised, denoised_fn, model_kwargs, generator
        )
        yield from self._loop_progressive(step, shape, noise, device, progress, generator)

    def p_sample_loop(self, *args, **kwargs):
        """Ancestral sampling (Ho et al. 2020, Alg. 2) with p_sample_loop_progressive's arguments;
        returns the final sample x_0 [shape]."""
        return _last(self.p_sample_loop_progressive(*args, **kwargs))["sample"]

    def ddim_sample_loop_progressive(
        self,
        model,
        shape,
        noise=None,
        clip_denoised=True,
        denoised_fn=None,
        model_kwargs=None,
        device=None,
        progress=False,
        eta=0.0,
        generator=None,
    ):
        """Yield ddim_sample's output at every step of DDIM sampling, starting at `noise`."""
        step = lambda x, t: self.ddim_sample(
            model, x, t, clip_denoised, denoised_fn, model_kwargs, eta, generator
        )
        yield from self._loop_progressive(step, shape, noise, device, progress, generator)

    def ddim_sample_loop(self, *args, **kwargs):
        """DDIM sampling over every step of this diffusion, with ddim_sample_loop_progressive's
        arguments; returns the final sample x_0 [shape]."""
        return _last(self.ddim_sample_loop_progressive(*args, **kwargs))["sample"]

    # ---- likelihood and training -----------------------------------------------------------

    def _vb_terms_bpd(
        self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None, reduce=mean_flat
    ):
        """The VB term of step t in bits per dimension [N]:
        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, and for t = 0 the discretised
        decoder NLL -log p(x_0 | x_1); `reduce` averages the per-element terms to [N].
        Returns dict "output" [N], "pred_xstart"."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised, model_kwargs=model_kwargs)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = reduce(kl) / np.log(2.0)
        nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        nll = reduce(nll) / np.log(2.0)
        return {"output": torch.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}

    def _mse_target(self, x_start, x_t, t, noise):
        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            return self.q_posterior_mean_variance(x_start, x_t, t)[0]
        if self.model_mean_type == ModelMeanType.START_X:
            return x_start
        if self.model_mean_type == ModelMeanType.VELOCITY:
            return self._predict_v(x_start, t, noise)
        return noise

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None, weights=None):
        """Per-sample training losses at timesteps t (long [N]) for data x_start [N, C, ...].

        Args:
            noise: the eps of q_sample (drawn with randn_like if None).
            weights: optional float [N] loss weights (e.g. SpeeD's); they multiply the MSE terms
                only, loss = weights * mse + vb (with a KL loss type they multiply the whole loss).
        Returns:
            dict of [N] tensors: "loss"; "mse" (unweighted, MSE loss types); "vb" (the VB term,
            when the variance is learned or the loss is KL); for a masked backbone's training
            output also "masked_mse" / "masked_vb" and its extra losses
            (`speed.diffusion.training_output`).
        """
        model_kwargs = model_kwargs or {}
        if noise is None:
            noise = torch.randn_like(x_start)
        if weights is not None and tuple(weights.shape) != (x_start.shape[0],):
            raise ValueError(f"weights must have shape [N={x_start.shape[0]}], got {weights.shape}")
        x_t = self.q_sample(x_start, t, noise=noise)
        if self.loss_type.is_vb():
            vb = self._vb_terms_bpd(model, x_start, x_t, t, False, model_kwargs)["output"]
            if self.loss_type == LossType.RESCALED_KL:
                vb = vb * self.num_timesteps
            return {"vb": vb, "loss": vb if weights is None else weights * vb}
        return output_terms(
            model(x_t, t, **model_kwargs),
            lambda out, reduce: self._prediction_terms(out, x_start, x_t, t, noise, reduce),
            weights,
        )

    def _prediction_terms(self, model_output, x_start, x_t, t, noise, reduce) -> dict:
        """ "mse" (and "vb" with a learned variance) [N] of one prediction, each averaged to [N]
        by `reduce` (`speed.diffusion.training_output`: over the visible elements or all)."""
        terms = {}
        if self.learns_variance:
            model_output, var_values = self._split_learned(model_output, x_t)
            # The VB term trains only the variance: stop the gradient through the mean.
            frozen = torch.cat([model_output.detach(), var_values], dim=1)
            vb = self._vb_terms_bpd(lambda *_, r=frozen: r, x_start, x_t, t, False, reduce=reduce)[
                "output"
            ]
            if self.loss_type == LossType.RESCALED_MSE:
                vb = vb * (self.num_timesteps / 1000.0)  # the MSE term is 1000x the VB's scale
            terms["vb"] = vb
        target = self._mse_target(x_start, x_t, t, noise)
        terms["mse"] = reduce((target - model_output) ** 2)
        return dict(sorted(terms.items()))  # "mse" first

    def original_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Original timesteps (long, like t) of indices t, for the loss-by-region logs."""
        return torch.as_tensor(self.timestep_map, device=t.device)[t]

    def _prior_bpd(self, x_start):
        """KL(q(x_{T-1} | x_0) || N(0, I)) in bits per dimension, [N]; independent of the model."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / np.log(2.0)

    @torch.no_grad()
    def calc_bpd_loop(
        self, model, x_start, clip_denoised=True, model_kwargs=None, generator=None, progress=False
    ):
        """The full variational bound in bits per dimension for x_start [N, ...].

        Returns dict: "total_bpd" [N], "prior_bpd" [N], "vb" [N, T], "xstart_mse" [N, T],
        "mse" [N, T] (eps MSE); column j holds timestep T-1-j, as in guided-diffusion.
        """
        vb, xstart_mse, mse = [], [], []
        for i in tqdm(range(self.num_timesteps)[::-1], disable=not progress, leave=False):
            t = torch.full((x_start.shape[0],), i, device=x_start.device, dtype=torch.long)
            noise = _randn(x_start.shape, x_start, generator)
            x_t = self.q_sample(x_start, t, noise=noise)
            out = self._vb_terms_bpd(model, x_start, x_t, t, clip_denoised, model_kwargs)
            vb.append(out["output"])
            xstart_mse.append(mean_flat((out["pred_xstart"] - x_start) ** 2))
            eps = self._predict_eps_from_xstart(x_t, t, out["pred_xstart"])
            mse.append(mean_flat((eps - noise) ** 2))
        vb, xstart_mse, mse = (torch.stack(v, dim=1) for v in (vb, xstart_mse, mse))
        prior_bpd = self._prior_bpd(x_start)
        return {
            "total_bpd": vb.sum(dim=1) + prior_bpd,
            "prior_bpd": prior_bpd,
            "vb": vb,
            "xstart_mse": xstart_mse,
            "mse": mse,
        }
