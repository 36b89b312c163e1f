"""Interpolant paths x_t = alpha_t x_0 + sigma_t eps between data x_0 (t = 0) and noise eps (t = 1).

Time runs as in the Gaussian diffusion: t = 0 is data, t = 1 is noise (REPA's and Stable Diffusion
3's convention). SiT (Ma et al. 2024, willisma/SiT `transport/path.py`) runs the other way: its
time s = 1 - t, its data coefficient alpha_SiT(s) = alpha_{1-s}, and its velocity
d x / ds = -(d x / dt), so SiT's tables and targets are ours read at 1 - t with the velocity's
sign flipped.

Paths (the registry `PATHS`; a new path is a new class):
- `linear` (rectified flow; SiT's `Linear`, SD3): alpha_t = 1 - t, sigma_t = t.
- `gvp` (generalised variance preserving; SiT's `GVP`): alpha_t = cos(pi t / 2),
  sigma_t = sin(pi t / 2), so alpha^2 + sigma^2 = 1 at every t.
- `vp` (SiT's `VP`): DDPM's linear schedule in continuous time (`VPPath`).

What a network may predict (`PREDICTIONS`), each turned into the pair (x_0, eps) by `split`:
- velocity v = alpha'_t x_0 + sigma'_t eps (d x_t / dt),
- noise eps,
- score grad log p_t(x) = -eps / sigma_t (for Gaussian noise; Song et al. 2021).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

PREDICTIONS = ("velocity", "noise", "score")


def expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t [N] reshaped to [N, 1, ...] to broadcast against x [N, ...], in x's dtype."""
    return t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class Path:
    """Coefficients of one interpolant; methods take t as a tensor (or numpy array) in [0, 1]."""

    name: ClassVar[str]

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def d_alpha(self, t):
        raise NotImplementedError

    def d_sigma(self, t):
        raise NotImplementedError

    def log_snr(self, t: np.ndarray) -> np.ndarray:
        """log(alpha_t^2 / sigma_t^2), float64, decreasing in t (+inf at 0, -inf at 1)."""
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return 2.0 * (np.log(self.alpha(t)) - np.log(self.sigma(t)))

    def time_of_log_snr(self, log_snr: np.ndarray) -> np.ndarray:
        """The t in [0, 1] whose log SNR is `log_snr` (inverse of `log_snr`)."""
        raise NotImplementedError

    def sample_xt(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t x_0 + sigma_t eps; x0, eps [N, ...], t [N]."""
        tt = expand(t, x0)
        return self.alpha(tt) * x0 + self.sigma(tt) * eps

    def velocity(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """d x_t / dt = alpha'_t x_0 + sigma'_t eps."""
        tt = expand(t, x0)
        return self.d_alpha(tt) * x0 + self.d_sigma(tt) * eps

    def split(self, prediction: str, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor):
        """(x_0, eps) implied by a network output `out` of kind `prediction` at (x_t, t).

        velocity: solving x = a x0 + s e, v = a' x0 + s' e gives
        x0 = (s' x - s v) / (a s' - a' s), e = (a v - a' x) / (a s' - a' s); the determinant
        a s' - a' s is 1 on the linear path and pi / 2 on the GVP path, never 0.
        noise: x0 = (x - s e) / a (singular at a = 0, hence `sample_eps`).
        score: e = -s * score, then as noise.
        """
        tt = expand(t, x)
        a, s = self.alpha(tt), self.sigma(tt)
        if prediction == "velocity":
            da, ds = self.d_alpha(tt), self.d_sigma(tt)
            det = a * ds - da * s
            return (ds * x - s * out) / det, (a * out - da * x) / det
        eps = out if prediction == "noise" else -s * out
        return (x - s * eps) / a, eps


class LinearPath(Path):
    """Rectified flow: alpha_t = 1 - t, sigma_t = t; SNR = ((1 - t) / t)^2."""

    name = "linear"

    def alpha(self, t):
        return 1 - t

    def sigma(self, t):
        return t

    def d_alpha(self, t):
        return -1.0 + 0 * t

    def d_sigma(self, t):
        return 1.0 + 0 * t

    def time_of_log_snr(self, log_snr):
        # (1 - t) / t = exp(log_snr / 2)  =>  t = 1 / (1 + exp(log_snr / 2)) = sigmoid(-log_snr / 2)
        return 1.0 / (1.0 + np.exp(0.5 * np.asarray(log_snr, dtype=np.float64)))


class GVPPath(Path):
    """Generalised VP: alpha_t = cos(pi t / 2), sigma_t = sin(pi t / 2); SNR = cot^2(pi t / 2)."""

    name = "gvp"

    @staticmethod
    def _trig(t):
        return (torch, t) if isinstance(t, torch.Tensor) else (np, np.asarray(t, dtype=np.float64))

    def alpha(self, t):
        lib, t = self._trig(t)
        return lib.cos(t * math.pi / 2)

    def sigma(self, t):
        lib, t = self._trig(t)
        return lib.sin(t * math.pi / 2)

    def d_alpha(self, t):
        lib, t = self._trig(t)
        return -math.pi / 2 * lib.sin(t * math.pi / 2)

    def d_sigma(self, t):
        lib, t = self._trig(t)
        return math.pi / 2 * lib.cos(t * math.pi / 2)

    def time_of_log_snr(self, log_snr):
        # cot(pi t / 2) = exp(log_snr / 2)  =>  t = (2 / pi) arctan(exp(-log_snr / 2))
        return 2.0 / np.pi * np.arctan(np.exp(-0.5 * np.asarray(log_snr, dtype=np.float64)))


class VPPath(Path):
    """SiT's `VP` path: the continuous limit of DDPM's linear schedule (Song et al. 2021, VP-SDE).

    log alpha_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2, sigma_t = sqrt(1 - alpha_t^2);
    with beta_min = 0.1, beta_max = 20 (SiT's defaults) alpha_{k/1000}^2 follows DDPM's abar_k
    of the 1000-step linear schedule (betas 1e-4 .. 0.02): the DDPM-equivalent path.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def _log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _d_log_alpha(self, t):
        return -0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min

    def _exp(self, v):
        return torch.exp(v) if isinstance(v, torch.Tensor) else np.exp(v)

    def _sqrt(self, v):
        return torch.sqrt(v) if isinstance(v, torch.Tensor) else np.sqrt(v)

    def alpha(self, t):
        return self._exp(self._log_alpha(t))

    def sigma(self, t):
        return self._sqrt(1 - self._exp(2 * self._log_alpha(t)))

    def d_alpha(self, t):
        return self.alpha(t) * self._d_log_alpha(t)

    def d_sigma(self, t):
        alpha = self.alpha(t)
        return -(alpha**2) * self._d_log_alpha(t) / self.sigma(t)

    def time_of_log_snr(self, log_snr):
        # alpha^2 = 1 / (1 + exp(-log_snr)): solve (d / 2) t^2 + beta_min t + log alpha^2 = 0
        log_abar = -np.logaddexp(0.0, -np.asarray(log_snr, dtype=np.float64))
        spread = self.beta_max - self.beta_min
        root = np.sqrt(self.beta_min**2 - 2.0 * spread * log_abar)
        return (root - self.beta_min) / spread


PATHS: dict[str, type[Path]] = {cls.name: cls for cls in (LinearPath, GVPPath, VPPath)}
