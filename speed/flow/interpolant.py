"""The interpolant (flow-matching) objective: a peer of `GaussianDiffusion` with the same training
call, `training_losses(model, x_start, t, model_kwargs, noise, weights)`.

Training (Albergo & Vanden-Eijnden 2023; Lipman et al. 2023; SiT, Ma et al. 2024): for data x_0,
noise eps and t drawn by the time sampler, x_t = alpha_t x_0 + sigma_t eps on the chosen path
(`speed.flow.paths`), and the network regresses its target at (x_t, t):
  velocity: ||out - (alpha'_t x_0 + sigma'_t eps)||^2,
  noise:    ||out - eps||^2,
  score:    ||sigma_t out + eps||^2 (SiT's form of ||out - (-eps / sigma_t)||^2 sigma_t^2).
Sampling integrates the probability-flow ODE dx/dt = v(x, t) from t = 1 to t = 0 (or its SDE),
with v recovered from any prediction through (x_0, eps) (`Path.split`).

Time scaling: the model is called as model(x_t, time_scale * t, **model_kwargs) with float times,
so DiT's and the UNet's sinusoidal timestep embeddings see the 0..1000 range they were designed
for (their frequencies span periods 1 .. 10000) and every backbone trains unchanged; time_scale = 1
feeds raw t as REPA does (SiT's models see 1 - t).
"""

from __future__ import annotations

import torch

from speed.diffusion.training_output import PREDICTION_KEYS, output_terms
from speed.flow.paths import PREDICTIONS, Path, expand

LOG_STEPS = 1000  # loss-by-region logs bucket t into tenths of a 1000-step scale, as for DDPM


class Interpolant:
    """x_t = alpha_t x_0 + sigma_t eps with t in [0, 1] (0 data, 1 noise).

    Args:
        path: a `speed.flow.paths.Path`.
        prediction: "velocity", "noise" or "score".
        time_scale: the model sees time_scale * t.
        train_eps, sample_eps: training draws t in [train_eps, 1 - train_eps]; samplers integrate
            over [sample_eps, 1 - sample_eps] (noise and score predictions divide by alpha or
            sigma at the ends).
        time_sampler: draws the training times (`speed.flow.timesteps.TimeSampler`).
    """

    family = "interpolant"
    original_num_steps = LOG_STEPS  # the scale of the loss-by-region logs and of num_steps' bound

    def __init__(
        self,
        path: Path,
        prediction: str = "velocity",
        time_scale: float = 1000.0,
        train_eps: float = 0.0,
        sample_eps: float = 0.0,
        time_sampler=None,
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        for name, eps in (("train_eps", train_eps), ("sample_eps", sample_eps)):
            if not 0 <= eps < 0.5:
                raise ValueError(f"{name} must lie in [0, 0.5), got {eps}")
        self.path, self.prediction = path, prediction
        self.time_scale = float(time_scale)
        self.train_eps, self.sample_eps = float(train_eps), float(sample_eps)
        self.timestep_sampler = time_sampler

    # ---- the model call ----

    def call_model(self, model, x: torch.Tensor, t: torch.Tensor, model_kwargs=None):
        """model(x, time_scale * t, **model_kwargs): a prediction of x's shape (or, in training,
        a masked backbone's dict of predictions, `speed.diffusion.training_output`)."""
        times = (t.to(torch.float32) * self.time_scale).expand(x.shape[0])
        out = model(x, times, **(model_kwargs or {}))
        masked = isinstance(out, dict)
        for prediction in [out[k] for k in PREDICTION_KEYS if k in out] if masked else [out]:
            if prediction.shape != x.shape:
                raise ValueError(
                    f"the model outputs {tuple(prediction.shape)} for inputs {tuple(x.shape)}; an "
                    "interpolant needs as many output channels as input channels (build the "
                    "backbone with learn_sigma=false)"
                )
        return out

    def predict(self, model, x: torch.Tensor, t: torch.Tensor, model_kwargs=None):
        """(x_0, eps) the model implies at (x, t); t [N] or a scalar tensor."""
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        out = self.call_model(model, x, t, model_kwargs)
        return self.path.split(self.prediction, out, x, t)

    def velocity(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """dx/dt of the probability-flow ODE from a prediction's (x_0, eps)."""
        return self.path.velocity(x0, eps, t.expand(x0.shape[0]) if t.ndim == 0 else t)

    # ---- training ----

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of `prediction` (for the score: eps, see `training_losses`)."""
        if self.prediction == "velocity":
            return self.path.velocity(x0, eps, t)
        return eps

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None, weights=None):
        """Per-sample losses at times t (float [N] in [0, 1]) for data x_start [N, C, ...].

        Args:
            noise: the eps of x_t (drawn with randn_like if None).
            weights: optional float [N] multipliers of the loss (e.g. SpeeD's).
        Returns:
            dict of [N] tensors: "loss" (weighted), "mse" (unweighted); for a masked backbone's
            training output (MaskDiT, MDT) also "masked_mse" and its extra losses, combined as
            for the Gaussian diffusion (`speed.diffusion.training_output`).
        """
        if noise is None:
            noise = torch.randn_like(x_start)
        if weights is not None and tuple(weights.shape) != (x_start.shape[0],):
            raise ValueError(f"weights must have shape [N={x_start.shape[0]}], got {weights.shape}")
        t = t.to(device=x_start.device, dtype=x_start.dtype)
        x_t = self.path.sample_xt(x_start, noise, t)

        def prediction_terms(out: torch.Tensor, reduce) -> dict:
            if self.prediction == "score":
                residual = self.path.sigma(expand(t, x_t)) * out + noise
            else:
                residual = out - self.target(x_start, noise, t)
            return {"mse": reduce(residual**2)}

        return output_terms(self.call_model(model, x_t, t, model_kwargs), prediction_terms, weights)

    def original_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """t on the 0..999 scale of the loss-by-region logs (long, like DDPM's timesteps)."""
        return (t.double() * LOG_STEPS).long().clamp(0, LOG_STEPS - 1)

    def describe(self) -> str:
        return f"interpolant ({self.path.name} path, {self.prediction} prediction)"
