"""Per-timestep loss weights w_t: one small class per weighting mode.

A weight multiplies the MSE term of a sample drawn at index t (not the learned-variance VB term)
and is not renormalised. Weights are float64 [T] over the indices of the diffusion being trained
(respaced or not) or None for plain MSE. Derivatives are taken with respect to the original
timestep (see `Schedule.derivative`), so tau keeps its meaning under respacing.

Modes (the registry `WEIGHTING_MODES` maps names to classes; a new mode is a new class):
- `none`: no weights.
- `speed`: SpeeD's change-aware weights (arXiv 2405.17403).
- `theory`: the same shape over all t with a fixed range [0.2, 0.8] (SpeeD's ablation).
- `p2`: perception-prioritised weights (Choi et al. 2022).
- `min_snr`: Min-SNR-gamma (Hang et al. 2023).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from speed.diffusion.timestep_sampling import Schedule


def normalized_change(schedule: Schedule) -> np.ndarray:
    """norm(g) = (g - min g) / (max g - min g) with g = d(1 - abar)/dt, float64 [T] in [0, 1]."""
    g = schedule.derivative(1.0 - schedule.alphas_cumprod)
    spread = g.max() - g.min()
    return np.zeros_like(g) if spread == 0 else (g - g.min()) / spread


class LossWeighting:
    """Base class: `weights` is float64 [T] or None."""

    name: ClassVar[str]

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.weights: np.ndarray | None = None

    def describe(self) -> str:
        return self.name


class NoWeighting(LossWeighting):
    """Plain MSE."""

    name = "none"


class SpeedWeighting(LossWeighting):
    """SpeeD's change-aware weights.

    w_t = (1 - lam) + (2 lam - 1) norm(g_t) for timestep < tau and 1 from tau on, so the weights
    below tau lie in [1 - lam, lam]: steps whose noise level changes fastest count most.
    """

    name = "speed"

    def __init__(self, schedule: Schedule, *, lam: float, tau: float):
        super().__init__(schedule)
        self.lam, self.tau = lam, tau
        change_aware = (1.0 - lam) + (2.0 * lam - 1.0) * normalized_change(schedule)
        self.weights = np.where(schedule.timesteps < tau, change_aware, 1.0)

    def describe(self) -> str:
        return f"{self.name} (lam={self.lam:g}, tau={self.tau:g})"


class TheoryWeighting(LossWeighting):
    """SpeeD's ablation: w_t = 0.2 + 0.6 norm(g_t) over all t (no tau cut-off)."""

    name = "theory"

    def __init__(self, schedule: Schedule):
        super().__init__(schedule)
        self.weights = 0.2 + 0.6 * normalized_change(schedule)


class P2Weighting(LossWeighting):
    """P2 weighting (Choi et al. 2022, eq. 8): w_t = 1 / (p2_k + SNR_t)^p2_gamma.

    With p2_k = 1 and p2_gamma = 1 this is 1 - abar_t.
    """

    name = "p2"

    def __init__(self, schedule: Schedule, *, p2_k: float = 1.0, p2_gamma: float = 1.0):
        super().__init__(schedule)
        self.k, self.gamma = float(p2_k), float(p2_gamma)
        self.weights = 1.0 / (self.k + schedule.snr) ** self.gamma

    def describe(self) -> str:
        return f"{self.name} (k={self.k:g}, gamma={self.gamma:g})"


class MinSNRWeighting(LossWeighting):
    """Min-SNR-gamma (Hang et al. 2023, sec. 3.4), written for the network's prediction target.

    The published weight is min(SNR_t, gamma) on the x0-MSE; expressed on the loss the network
    is trained with it becomes, by `min_snr_target`:
      "eps" (default; DiT/ADM predict noise): w_t = min(SNR_t, gamma) / SNR_t,
      "v":   w_t = min(SNR_t, gamma) / (SNR_t + 1)  (the form SpeeD's released code writes),
      "x0":  w_t = min(SNR_t, gamma).
    SpeeD's code meant the "v" form but indexed the element-wise minimum with [0], which made
    the numerator a constant (gamma) and the weights 5 / (SNR + 1), i.e. scaled P2.
    """

    name = "min_snr"
    TARGETS: ClassVar[dict] = {
        "eps": lambda snr: snr,
        "v": lambda snr: snr + 1.0,
        "x0": lambda snr: np.ones_like(snr),
    }

    def __init__(self, schedule: Schedule, *, min_snr_gamma=5.0, min_snr_target="eps"):
        super().__init__(schedule)
        if min_snr_target not in self.TARGETS:
            raise ValueError(
                f"min_snr_target must be one of {sorted(self.TARGETS)}, got {min_snr_target!r}"
            )
        if not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
        self.gamma, self.target = float(min_snr_gamma), min_snr_target
        snr = schedule.snr
        self.weights = np.minimum(snr, self.gamma) / self.TARGETS[min_snr_target](snr)

    def describe(self) -> str:
        return f"{self.name} (gamma={self.gamma:g}, {self.target}-prediction)"


WEIGHTING_MODES: dict[str, type[LossWeighting]] = {
    cls.name: cls
    for cls in (NoWeighting, SpeedWeighting, TheoryWeighting, P2Weighting, MinSNRWeighting)
}
