"""Which times t in [0, 1] a training batch of an interpolant draws, and their loss weights.

One small class per distribution (the registry `TIME_DISTRIBUTIONS`; a new one is a new class whose
keyword-only parameters become config keys of the `diffusion` node), one per weighting
(`TIME_WEIGHTINGS`), combined by `build_time_sampler` into a `TimeSampler` with the interface of the
discrete `speed.diffusion.timesteps.TimestepSampler` (`sample`, `set_step`, `update_with_losses`,
`state_dict`, `describe`), so the training loop runs either unchanged.

Every distribution lives on [t_min, t_max] = [train_eps, 1 - train_eps]: a draw u on [0, 1] is
placed at t_min + (t_max - t_min) u.

- `uniform`: u ~ U(0, 1) (SiT, rectified flow).
- `logit_normal`: logit(u) ~ N(lognorm_mean, lognorm_std^2) (Stable Diffusion 3, Esser et al. 2024,
  eq. 19; the same keys as the discrete `lognorm` mode).
- `lognormal`: EDM's noise levels (Karras et al. 2022): sigma_t / alpha_t = exp(N(P_mean, P_std^2))
  with `edm_p_mean` = -1.2, `edm_p_std` = 1.2, placed on the path by its SNR (REPA's `lognormal`
  is this with mean 0, std 1 on the linear path, where it equals `logit_normal`).
- `speed`: SpeeD (arXiv 2405.17403) carried to continuous time, see below.

SpeeD in continuous time. SpeeD splits DDPM's 1000 steps into an acceleration area [0, M), a
deceleration area [M, tau) and a convergence area [tau, T); it draws steps below tau k times as
often as those above, mirrors each draw about M (dual sampling), and weights the loss below tau by
the change of the noise fraction. Those areas are areas of noise level, so they are carried to any
path by equal signal-to-noise ratio: tau and M (original DDPM timesteps of the reference chain,
DDPM's 1000-step linear schedule, where M = 642) become the path times t_tau and t_M whose SNR
alpha_t^2 / sigma_t^2 equals the chain's abar / (1 - abar) at those steps. Then
  p(t) proportional to k on [t_min, t_tau) and 1 on [t_tau, t_max];
  dual: each draw t also gives |t - t_M| (clipped into [t_min, t_max]);
  weights (`weighting: speed`): w(t) = (1 - lam) + (2 lam - 1) norm(g(t)) below t_tau and 1 above,
  g(t) = d(1 - abar(t)) / dt with the path's own noise fraction 1 - abar(t) = 1 / (1 + SNR(t)),
  normalised to [0, 1] over t in [0, 1].
On the `vp` path (DDPM's schedule in continuous time: index i is t = (i + 1) / 1000) t_tau = 0.7025
and t_M = 0.6442, and densities, mirrors and weights are the discrete definition to within a
step (tests/flow/test_flow_timesteps.py checks it); on the linear path tau = 700 lands at
t_tau = 0.923 and M at t_M = 0.890, on the GVP path at 0.947 and 0.922 (both keep much more
signal than DDPM's chain at the same t).
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import ClassVar

import numpy as np
import torch

from speed.diffusion.schedules import get_named_beta_schedule
from speed.diffusion.timestep_sampling import Schedule
from speed.flow.paths import Path

REFERENCE_STEPS = 1000  # the reference DDPM chain of SpeeD's tau and M: linear schedule, T = 1000
GRID = 4001  # points on [0, 1] where SpeeD's change g(t) is tabulated and normalised


def reference_log_snr(steps) -> np.ndarray:
    """log SNR of the reference DDPM chain at (fractional) original timesteps, float64."""
    abar = np.cumprod(1.0 - get_named_beta_schedule("linear", REFERENCE_STEPS))
    log_snr = np.log(abar) - np.log1p(-abar)
    return np.interp(np.asarray(steps, dtype=np.float64), np.arange(REFERENCE_STEPS), log_snr)


def reference_pivot() -> int:
    """SpeeD's M of the reference chain (642)."""
    abar = np.cumprod(1.0 - get_named_beta_schedule("linear", REFERENCE_STEPS))
    return Schedule.from_arrays(abar).pivot


class TimeDistribution:
    """Base class: draws t on [t_min, t_max]; `density(t)` is its probability density."""

    name: ClassVar[str]

    def __init__(self, path: Path, t_min: float, t_max: float):
        self.path, self.t_min, self.t_max = path, float(t_min), float(t_max)
        self.pivot: float | None = None  # dual sampling's mirror point, if any

    @property
    def span(self) -> float:
        return self.t_max - self.t_min

    def draw_unit(self, n: int, generator) -> torch.Tensor:
        """n draws u on [0, 1] (float64 [n])."""
        raise NotImplementedError

    def unit_density(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n times t (float64 CPU [n]); with a pivot, n // 2 + 1 draws and their mirrors."""
        if self.pivot is None:
            return self.t_min + self.span * self.draw_unit(n, generator)
        first = self.t_min + self.span * self.draw_unit(n // 2 + 1, generator)
        dual = (first - self.pivot).abs().clamp(self.t_min, self.t_max)
        return torch.cat([first, dual])[:n]

    def density(self, t) -> np.ndarray:
        """Density of one base draw (before any mirror) at t, float64."""
        u = (np.asarray(t, dtype=np.float64) - self.t_min) / self.span
        inside = (u >= 0) & (u <= 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = self.unit_density(np.clip(u, 0.0, 1.0)) / self.span
        return np.where(inside, values, 0.0)

    def effective_density(self, t) -> np.ndarray:
        """Density of a drawn time at t, mirrors included: with a pivot M half the draws are base
        draws and half their mirrors |t - M| (the clip's point mass at t_min is left out)."""
        if self.pivot is None:
            return self.density(t)
        t = np.asarray(t, dtype=np.float64)
        mirrors = self.density(self.pivot + t) + self.density(self.pivot - t)
        return 0.5 * (self.density(t) + np.where(t >= 0, mirrors, 0.0))

    def describe(self) -> str:
        return self.name


class UniformTime(TimeDistribution):
    """u ~ U(0, 1)."""

    name = "uniform"

    def draw_unit(self, n, generator):
        return torch.rand(n, generator=generator, dtype=torch.float64)

    def unit_density(self, u):
        return np.ones_like(u)


class LogitNormalTime(TimeDistribution):
    """logit(u) ~ N(lognorm_mean, lognorm_std^2) (SD3, eq. 19; their default is (0, 1))."""

    name = "logit_normal"

    def __init__(self, path, t_min, t_max, *, lognorm_mean: float = 0.0, lognorm_std=1.0):
        super().__init__(path, t_min, t_max)
        if not lognorm_std > 0:
            raise ValueError(f"lognorm_std must be > 0, got {lognorm_std}")
        self.mean, self.std = float(lognorm_mean), float(lognorm_std)

    def draw_unit(self, n, generator):
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        return torch.sigmoid(self.mean + self.std * z)

    def unit_density(self, u):
        logit = np.log(u) - np.log1p(-u)
        gauss = np.exp(-0.5 * ((logit - self.mean) / self.std) ** 2)
        value = gauss / (self.std * math.sqrt(2 * math.pi) * u * (1 - u))
        return np.where((u > 0) & (u < 1), value, 0.0)  # its limit at both ends is 0

    def describe(self):
        return f"{self.name} (mean={self.mean:g}, std={self.std:g})"


class LogNormalTime(TimeDistribution):
    """EDM's lognormal noise levels: ln(sigma_t / alpha_t) ~ N(edm_p_mean, edm_p_std^2), i.e.
    log SNR = -2 ln(sigma / alpha), placed at the path time of that SNR."""

    name = "lognormal"

    def __init__(self, path, t_min, t_max, *, edm_p_mean: float = -1.2, edm_p_std=1.2):
        super().__init__(path, t_min, t_max)
        if not edm_p_std > 0:
            raise ValueError(f"edm_p_std must be > 0, got {edm_p_std}")
        self.mean, self.std = float(edm_p_mean), float(edm_p_std)

    def draw_unit(self, n, generator):
        log_sigma = self.mean + self.std * torch.randn(n, generator=generator, dtype=torch.float64)
        return torch.from_numpy(self.path.time_of_log_snr(-2.0 * log_sigma.numpy()))

    def unit_density(self, u):
        log_sigma = -0.5 * self.path.log_snr(u)
        gauss = np.exp(-0.5 * ((log_sigma - self.mean) / self.std) ** 2)
        path = self.path  # d ln(sigma / alpha) / du = sigma' / sigma - alpha' / alpha
        slope = np.abs(path.d_sigma(u) / path.sigma(u) - path.d_alpha(u) / path.alpha(u))
        value = gauss / (self.std * math.sqrt(2 * math.pi)) * slope
        return np.where(np.isfinite(log_sigma), value, 0.0)  # its limit at both ends is 0

    def describe(self):
        return f"{self.name} (P_mean={self.mean:g}, P_std={self.std:g})"


def equal_snr_time(path: Path, step: float) -> float:
    """The path time whose SNR equals the reference DDPM chain's at original timestep `step`."""
    return float(path.time_of_log_snr(reference_log_snr(step)))


class SpeedTime(TimeDistribution):
    """SpeeD's asymmetric + dual sampling on continuous t (module docstring): density k below
    t_tau, 1 above; each draw mirrored about t_M (`dual_pivot`: M as a reference timestep)."""

    name = "speed"

    def __init__(self, path, t_min, t_max, *, k: float, tau: float, dual_pivot=None):
        super().__init__(path, t_min, t_max)
        self.k, self.tau = float(k), float(tau)
        self.t_tau = min(max(equal_snr_time(path, tau), self.t_min), self.t_max)
        self.pivot_step = reference_pivot() if dual_pivot is None else float(dual_pivot)
        self.pivot = equal_snr_time(path, self.pivot_step)
        below = self.k * (self.t_tau - self.t_min)
        self.mass_below = below / (below + self.t_max - self.t_tau)

    def draw_unit(self, n, generator):
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        lo, tau, hi = self.t_min, self.t_tau, self.t_max
        t = torch.where(
            u < self.mass_below,
            lo + (tau - lo) * u / max(self.mass_below, 1e-300),
            tau + (hi - tau) * (u - self.mass_below) / max(1.0 - self.mass_below, 1e-300),
        )
        return (t - lo) / self.span

    def unit_density(self, u):
        t = self.t_min + self.span * u
        height = np.where(t < self.t_tau, self.k, 1.0)
        return height * self.span / (self.k * (self.t_tau - self.t_min) + self.t_max - self.t_tau)

    def describe(self):
        return (
            f"{self.name} (k={self.k:g}, tau={self.tau:g} -> t={self.t_tau:.3f}, "
            f"dual about M={self.pivot_step:g} -> t={self.pivot:.3f})"
        )


class TimeWeighting:
    """Base class: per-sample loss weights w(t), or None for plain MSE."""

    name: ClassVar[str]

    def __init__(self, path: Path):
        self.path = path

    def weights(self, t: np.ndarray) -> np.ndarray | None:
        return None

    def describe(self) -> str:
        return self.name


class NoTimeWeighting(TimeWeighting):
    name = "none"


class SpeedTimeWeighting(TimeWeighting):
    """SpeeD's change-aware weights on the path's own noise fraction (module docstring)."""

    name = "speed"

    def __init__(self, path, *, lam: float, tau: float):
        super().__init__(path)
        self.lam, self.tau = float(lam), float(tau)
        self.t_tau = equal_snr_time(path, tau)
        self.grid = np.linspace(0.0, 1.0, GRID)
        with np.errstate(over="ignore"):
            noise_fraction = 1.0 / (1.0 + np.exp(path.log_snr(self.grid)))
        g = np.gradient(noise_fraction, self.grid)
        spread = g.max() - g.min()
        self.change = np.zeros_like(g) if spread == 0 else (g - g.min()) / spread

    def weights(self, t):
        t = np.asarray(t, dtype=np.float64)
        change_aware = (1 - self.lam) + (2 * self.lam - 1) * np.interp(t, self.grid, self.change)
        return np.where(t < self.t_tau, change_aware, 1.0)

    def describe(self):
        return f"{self.name} (lam={self.lam:g}, tau={self.tau:g} -> t={self.t_tau:.3f})"


TIME_DISTRIBUTIONS: dict[str, type[TimeDistribution]] = {
    cls.name: cls for cls in (UniformTime, LogitNormalTime, LogNormalTime, SpeedTime)
}
TIME_WEIGHTINGS: dict[str, type[TimeWeighting]] = {
    cls.name: cls for cls in (NoTimeWeighting, SpeedTimeWeighting)
}
COMMON = ("k", "lam", "tau")


def _params(cls) -> list[str]:
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def time_option_names() -> list[str]:
    """Every mode option `build_time_sampler` accepts in `**options`, sorted."""
    classes = [*TIME_DISTRIBUTIONS.values(), *TIME_WEIGHTINGS.values()]
    names = {name for cls in classes for name in _params(cls)}
    return sorted(names - set(COMMON))


def _pick(kind: str, name: str, registry: dict):
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(str(name), list(registry), n=1, cutoff=0.0)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(
        f"unknown diffusion.{kind} '{name}' for an interpolant{hint} "
        f"(valid: {', '.join(sorted(registry))})"
    )


class TimeSampler:
    """Draws training times t and their loss multipliers; the interface of the discrete
    `TimestepSampler` (no state: a resumed run redraws from the step's own generator)."""

    def __init__(self, distribution: TimeDistribution, weighting: TimeWeighting):
        self.distribution, self.weighting = distribution, weighting
        self.pivot = distribution.pivot

    def sample(self, n: int, device, generator: torch.Generator | None = None):
        """Times t (float32 [n]) and multipliers w(t) (float32 [n]; ones without weighting)."""
        t = self.distribution.draw(n, generator)
        w = self.weighting.weights(t.numpy())
        weights = torch.ones(n, dtype=torch.float64) if w is None else torch.from_numpy(w)
        return t.to(device=device, dtype=torch.float32), weights.to(device, torch.float32)

    def update_with_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """No continuous distribution is loss-aware (kept for the training loop's interface)."""

    def set_step(self, step: int) -> None:
        """No continuous distribution follows a curriculum (kept for the loop's interface)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"the interpolant's time sampler has no state, got {sorted(state)}")

    def profile(self, points: int = 1000) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """Where training spends its draws, for plots: ("continuous", `points` mid-points x of
        [0, 1], the draw density there after any mirror (`effective_density`; 1 = uniform), the
        loss weights there (ones without weighting))."""
        x = (np.arange(points) + 0.5) / points
        weights = self.weighting.weights(x)
        weights = np.ones_like(x) if weights is None else weights
        return "continuous", x, self.distribution.effective_density(x), weights

    def describe(self) -> str:
        return (
            f"t in [{self.distribution.t_min:g}, {self.distribution.t_max:g}]; "
            f"sampling={self.distribution.describe()}; weighting={self.weighting.describe()}"
        )


def build_time_sampler(
    path: Path,
    t_min: float = 0.0,
    t_max: float = 1.0,
    *,
    faster: bool = False,
    sampling: str | None = None,
    weighting: str | None = None,
    k: float = 5.0,
    lam: float = 0.6,
    tau: float = 700,
    **options,
) -> TimeSampler:
    """The time sampler of an interpolant on `path`; arguments as the discrete
    `build_timestep_sampler` (faster = SpeeD: `speed` sampling and weighting unless named;
    tau on the reference chain's 0..1000 scale). Options of modes not in use are accepted and
    ignored, so a shared base config can hold them."""
    valid = time_option_names()
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown diffusion option '{key}' for an interpolant{hint}")
    if not k > 0 or not 0.5 <= lam <= 1 or not 0 <= tau <= REFERENCE_STEPS:
        raise ValueError(
            f"need diffusion.k > 0, 0.5 <= lam <= 1 and 0 <= tau <= {REFERENCE_STEPS}; "
            f"got {k}, {lam}, {tau}"
        )
    if not 0 <= t_min < t_max <= 1:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
    params = {"k": k, "lam": lam, "tau": tau, **options}

    def keep(cls):
        return {key: params[key] for key in _params(cls) if key in params}

    dist_cls = _pick("sampling", sampling or ("speed" if faster else "uniform"), TIME_DISTRIBUTIONS)
    weight_cls = _pick("weighting", weighting or ("speed" if faster else "none"), TIME_WEIGHTINGS)
    distribution = dist_cls(path, t_min, t_max, **keep(dist_cls))
    return TimeSampler(distribution, weight_cls(path, **keep(weight_cls)))
