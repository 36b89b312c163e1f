"""Timestep sampling plus loss weighting for training, and the loss-by-timestep log.

`build_timestep_sampler` combines one sampling mode (`timestep_sampling.SAMPLING_MODES`) with one
weighting mode (`loss_weighting.WEIGHTING_MODES`) into a `TimestepSampler`. `faster=True` is
SpeeD's switch (arXiv 2405.17403): asymmetric + dual sampling and change-aware weights with the
paper's k = 5, lam = 0.6, tau = 700, each overridable.
"""

from __future__ import annotations

import difflib
import inspect

import numpy as np
import torch

from speed.diffusion.loss_weighting import WEIGHTING_MODES, LossWeighting
from speed.diffusion.timestep_sampling import SAMPLING_MODES, SamplingMode, Schedule

COMMON_PARAMS = ("k", "lam", "tau")


def _mode_params(cls) -> list[str]:
    """Keyword-only constructor arguments of a mode class: the parameters it accepts."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def option_names() -> list[str]:
    """Every mode option `build_timestep_sampler` accepts in `**options`, sorted."""
    names = {
        name
        for cls in [*SAMPLING_MODES.values(), *WEIGHTING_MODES.values()]
        for name in _mode_params(cls)
    }
    return sorted(names - set(COMMON_PARAMS))


def _closest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.0)
    return f"; did you mean '{match[0]}'?" if match else ""


def _pick(kind: str, name: str, registry: dict):
    key = str(name).lower()
    if key not in registry:
        raise ValueError(
            f"unknown diffusion.{kind} '{name}'{_closest(key, registry)} "
            f"(valid: {', '.join(sorted(registry))})"
        )
    return registry[key]


def _check_common(k, lam, tau, num_original_steps: int) -> tuple[float, float, float]:
    try:
        k, lam, tau = float(k), float(lam), float(tau)
    except (TypeError, ValueError):
        raise ValueError(
            f"diffusion.k, lam and tau must be numbers, got {k!r}, {lam!r}, {tau!r}"
        ) from None
    if not k > 0:
        raise ValueError(f"diffusion.k={k:g} must be > 0 (sampling ratio below/above tau)")
    if not 0.5 <= lam <= 1.0:
        raise ValueError(f"diffusion.lam={lam:g} must lie in [0.5, 1] (weights span [1-lam, lam])")
    if not 0 <= tau <= num_original_steps:
        raise ValueError(f"diffusion.tau={tau:g} must lie in [0, {num_original_steps}] (timesteps)")
    return k, lam, tau


class TimestepSampler:
    """Draws training indices and their per-sample MSE multipliers.

    Attributes: `num_timesteps` (T), `timesteps` (int64 [T], original timestep of each index),
    `probs` (float64 [T], the sampling mode's base distribution; for dual sampling the p before
    the mirror), `effective_probs` (per-draw frequency including the mirror), `weights` (float64
    [T] loss weights or None), `pivot` (SpeeD's M, original scale), `tau`.
    """

    def __init__(self, schedule: Schedule, sampling: SamplingMode, weighting: LossWeighting, tau):
        self.schedule, self.sampling, self.weighting, self.tau = schedule, sampling, weighting, tau
        self.num_timesteps = schedule.num_timesteps
        self.timesteps = schedule.timesteps
        self.pivot = schedule.pivot if sampling.pivot is None else sampling.pivot

    @property
    def probs(self) -> np.ndarray:
        return self.sampling.probs

    @property
    def effective_probs(self) -> np.ndarray:
        return self.sampling.effective_probs

    @property
    def weights(self) -> np.ndarray | None:
        return self.weighting.weights

    def profile(self) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """Where training spends its draws, for plots: ("discrete", x = (original timestep + 1)
        / T of each index (DDPM's step i is at t = i + 1), the draw density relative to uniform
        after any dual sampling's mirror (1 = uniform), the loss weights (ones without any))."""
        count = self.num_timesteps
        weights = np.ones(count) if self.weights is None else self.weights
        x = (self.timesteps + 1) / self.schedule.num_original_steps
        return "discrete", x, self.effective_probs * count, weights

    def sample(self, n: int, device, generator: torch.Generator | None = None):
        """Indices t (LongTensor [n]) and MSE multipliers (float32 [n]) on `device`.

        The multiplier is w_t (1 without weighting) times the importance weight 1 / (T p_t) of
        modes that have one. Draws use `generator` (a CPU torch.Generator) when given.
        """
        t, importance = self.sampling.draw(n, generator)
        weights = torch.ones(n, dtype=torch.float64)
        if self.weights is not None:
            weights = torch.from_numpy(self.weights)[t]
        if importance is not None:
            weights = weights * importance
        return t.to(device), weights.to(device=device, dtype=torch.float32)

    def update_with_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Feed per-sample losses ([n], before weighting) of the indices `t` back to the sampler.

        Collective under torch.distributed for loss-aware sampling: every rank must call it.
        """
        self.sampling.update_with_losses(t, losses)

    def set_step(self, step: int) -> None:
        """Current training step, for curriculum sampling (`clts`)."""
        self.sampling.set_step(step)

    def state_dict(self) -> dict:
        return self.sampling.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampling.load_state_dict(state)

    def describe(self) -> str:
        return (
            f"T={self.num_timesteps}, M={self.pivot}; "
            f"sampling={self.sampling.describe()}; weighting={self.weighting.describe()}"
        )


def build_timestep_sampler(
    alphas_cumprod,
    timestep_map=None,
    *,
    faster: bool = False,
    sampling: str | None = None,
    weighting: str | None = None,
    k: float = 5.0,
    lam: float = 0.6,
    tau: float = 700,
    **options,
) -> TimestepSampler:
    """Build the sampler for a diffusion with `alphas_cumprod` (float64 [T], respaced if respaced).

    timestep_map: original timestep of each index (default 0..T-1); tau and M are on that scale.
    faster: SpeeD's switch; it makes `speed` the default sampling and weighting (otherwise
        `uniform` / `none`); an explicit `sampling` / `weighting` wins.
    k: sampling ratio below / above tau (> 0). lam: weight range [1 - lam, lam] below tau, in
        [0.5, 1]. tau: start of the convergence area, an original timestep in [0, T].
    options: mode parameters (see `option_names()`), e.g. p2_k, p2_gamma, min_snr_gamma,
        min_snr_target, lognorm_mean, lognorm_std, clts_mean, clts_std, clts_steps,
        history_per_term, uniform_prob, tanh_scale, dual_pivot. Options of modes not in use are
        accepted and ignored, so a shared base config can hold them.
    """
    schedule = Schedule.from_arrays(alphas_cumprod, timestep_map)
    valid = option_names()
    for key in options:
        if key not in valid:
            raise ValueError(f"unknown diffusion option '{key}'{_closest(key, valid)}")
    k, lam, tau = _check_common(k, lam, tau, schedule.num_original_steps)
    sampling_cls = _pick("sampling", sampling or ("speed" if faster else "uniform"), SAMPLING_MODES)
    weighting_cls = _pick(
        "weighting", weighting or ("speed" if faster else "none"), WEIGHTING_MODES
    )
    params = {"k": k, "lam": lam, "tau": tau, **options}

    def build(cls):
        return cls(schedule, **{key: params[key] for key in _mode_params(cls) if key in params})

    return TimestepSampler(schedule, build(sampling_cls), build(weighting_cls), tau)


def loss_by_region(
    t_original: torch.Tensor, losses: torch.Tensor, num_timesteps: int = 1000, num_regions: int = 10
) -> dict[str, float]:
    """Mean loss per bucket of original timesteps, e.g. {"loss_t/000-099": 0.12, ...}.

    t_original: LongTensor [n] of original timesteps; losses: [n] per-sample losses. Buckets are
    num_regions equal slices of [0, num_timesteps); empty buckets are left out.
    """
    edges = [b * num_timesteps // num_regions for b in range(num_regions + 1)]
    digits = max(3, len(str(num_timesteps - 1)))
    bounds = torch.tensor(edges[1:-1], device=t_original.device)
    bucket = torch.bucketize(t_original, bounds, right=True)
    values = losses.detach().double()
    sums = torch.zeros(num_regions, dtype=torch.float64, device=values.device)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, bucket.to(values.device), values)
    counts.index_add_(0, bucket.to(values.device), torch.ones_like(values))
    return {
        f"loss_t/{edges[b]:0{digits}d}-{edges[b + 1] - 1:0{digits}d}": s / c
        for b, (s, c) in enumerate(zip(sums.tolist(), counts.tolist()))
        if c > 0
    }
