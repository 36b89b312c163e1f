"""Which diffusion steps a training batch draws: one small class per sampling mode.

Every mode turns the schedule of the diffusion being trained into a distribution over its indices
0..T-1 (`probs`, float64 [T], sums to 1) and draws from it with `torch.multinomial`. Timestep
thresholds (`tau`, the pivot M) live on the original (e.g. 1000-step) scale: with respacing, index i
stands for original timestep `schedule.timesteps[i]`, and derivatives are taken with respect to
the original timestep, so the thresholds keep their meaning.

Modes (the registry `SAMPLING_MODES` maps names to classes; a new mode is a new class):
- `uniform`: p_t = 1/T (DDPM, DiT).
- `no_dual`: SpeeD's asymmetric sampling (arXiv 2405.17403): p_t proportional to k below tau,
  1 from tau on.
- `speed`: asymmetric sampling plus SpeeD's dual sampling about the pivot M.
- `tanh`: SpeeD's May-2024 variant, p_t = tanh(1e6 (d sqrt(1 - abar)/dt - 1e-4)) + 1.5, with dual.
- `lognorm`: SD3's logit-normal timestep density (Esser et al. 2024, eq. 19) carried to DDPM by SNR.
- `clts`: curriculum learning timestep schedule (Xu et al. 2024, arXiv 2404.07946).
- `loss_second_moment`: ADM's loss-aware importance sampler (Nichol & Dhariwal 2021, sec. 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from speed.utils.distributed import all_gather_rows

PIVOT_THRESHOLD = 1e-4  # SpeeD: the convergence area starts where d sqrt(1 - abar)/dt < 1e-4


@dataclass(frozen=True, eq=False)
class Schedule:
    """Per-index tables of the diffusion being trained.

    alphas_cumprod: float64 [T], abar of each index (the respaced diffusion's values if respaced).
    timesteps: int64 [T], strictly increasing original timestep of each index.
    """

    alphas_cumprod: np.ndarray
    timesteps: np.ndarray

    @classmethod
    def from_arrays(cls, alphas_cumprod, timestep_map=None) -> Schedule:
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or abar.size < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D array of >= 2 steps, got {abar.shape}")
        if not np.all((abar > 0) & (abar < 1)):
            raise ValueError("alphas_cumprod must lie strictly between 0 and 1")
        steps = np.arange(abar.size) if timestep_map is None else np.asarray(timestep_map)
        steps = steps.astype(np.int64)
        if steps.shape != abar.shape:
            raise ValueError(f"timestep_map has shape {steps.shape}, expected {abar.shape}")
        if steps[0] < 0 or np.any(np.diff(steps) <= 0):
            raise ValueError("timestep_map must be non-negative and strictly increasing")
        return cls(abar, steps)

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.size)

    @property
    def num_original_steps(self) -> int:
        """Length of the original schedule, as far as the kept timesteps tell (last one + 1)."""
        return int(self.timesteps[-1]) + 1

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio abar / (1 - abar), float64 [T]."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    def derivative(self, values: np.ndarray) -> np.ndarray:
        """d values / dt by `np.gradient` over the original timesteps, float64 [T]."""
        return np.gradient(values, self.timesteps.astype(np.float64))

    @property
    def pivot(self) -> int:
        """SpeeD's M = argmax(d sqrt(1 - abar)/dt < 1e-4) + 1, as an original timestep.

        642 for the 1000-step linear schedule. If the derivative never drops below the threshold,
        the whole schedule counts as changing and M is the schedule length.
        """
        below = self.derivative(np.sqrt(1.0 - self.alphas_cumprod)) < PIVOT_THRESHOLD
        if not below.any():
            return self.num_original_steps
        return int(self.timesteps[np.argmax(below)]) + 1

    def nearest_index(self, original: np.ndarray) -> np.ndarray:
        """Index whose original timestep is closest to each value (ties go to the lower one)."""
        right = np.clip(np.searchsorted(self.timesteps, original), 1, self.num_timesteps - 1)
        left = right - 1
        closer_left = original - self.timesteps[left] <= self.timesteps[right] - original
        return np.where(closer_left, left, right)


class SamplingMode:
    """Base class: a distribution `probs` over indices, optionally mirrored about a pivot.

    When `pivot` is set (dual sampling), `draw(n)` takes n // 2 + 1 indices from `probs`, appends
    their duals (original timestep |t - M|, mapped to the nearest kept index) and keeps the first
    n; `probs` stays the base distribution p before the mirror, and `effective_probs` is the
    per-draw frequency of a long batch, (p + mirror of p) / 2.
    """

    name: ClassVar[str]

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.pivot: int | None = None
        self._dual_index: np.ndarray | None = None

    def _enable_dual(self, dual_pivot: int | None) -> None:
        pivot = self.schedule.pivot if dual_pivot is None else int(dual_pivot)
        if not 0 <= pivot <= self.schedule.num_original_steps:
            raise ValueError(
                f"dual_pivot={pivot} must lie in [0, {self.schedule.num_original_steps}]"
            )
        self.pivot = pivot
        self._dual_index = self.schedule.nearest_index(np.abs(self.schedule.timesteps - pivot))

    @property
    def probs(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def effective_probs(self) -> np.ndarray:
        probs = self.probs
        if self._dual_index is None:
            return probs
        mirrored = np.bincount(self._dual_index, weights=probs, minlength=probs.size)
        return 0.5 * (probs + mirrored)

    def dual_of(self, t: torch.Tensor) -> torch.Tensor:
        """Dual indices of indices `t` (LongTensor, any shape); requires dual sampling."""
        return torch.from_numpy(self._dual_index)[t.cpu()]

    def draw(self, n: int, generator: torch.Generator | None = None):
        """n indices (CPU LongTensor [n]) and importance weights ([n] float64 or None)."""
        probs = torch.from_numpy(self.probs)
        if self._dual_index is None:
            return torch.multinomial(probs, n, replacement=True, generator=generator), None
        first = torch.multinomial(probs, n // 2 + 1, replacement=True, generator=generator)
        return torch.cat([first, self.dual_of(first)])[:n], None

    def update_with_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Feed back per-sample losses of drawn indices; only loss-aware modes use them."""

    def set_step(self, step: int) -> None:
        """Tell the mode the current training step; only curriculum modes use it."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"sampling mode '{self.name}' has no state, got keys {sorted(state)}")

    def describe(self) -> str:
        return self.name


class UniformSampling(SamplingMode):
    """p_t = 1/T over the indices."""

    name = "uniform"

    @property
    def probs(self) -> np.ndarray:
        return np.full(self.schedule.num_timesteps, 1.0 / self.schedule.num_timesteps)


class AsymmetricSampling(SamplingMode):
    """SpeeD's asymmetric sampling: p_t proportional to k if timestep < tau else 1."""

    name = "no_dual"

    def __init__(self, schedule: Schedule, *, k: float, tau: float):
        super().__init__(schedule)
        self.k, self.tau = k, tau
        weights = np.where(schedule.timesteps < tau, float(k), 1.0)
        self._probs = weights / weights.sum()

    @property
    def probs(self) -> np.ndarray:
        return self._probs

    def describe(self) -> str:
        dual = f", dual about M={self.pivot}" if self.pivot is not None else ""
        return f"{self.name} (k={self.k:g}, tau={self.tau:g}{dual})"


class SpeedSampling(AsymmetricSampling):
    """SpeeD: asymmetric sampling plus dual sampling about M (or `dual_pivot`, original scale)."""

    name = "speed"

    def __init__(self, schedule: Schedule, *, k: float, tau: float, dual_pivot: int | None = None):
        super().__init__(schedule, k=k, tau=tau)
        self._enable_dual(dual_pivot)


class TanhSampling(SamplingMode):
    """SpeeD's May-2024 sampler: a smooth 5:1 step at M, then dual sampling about M.

    p_t = tanh(tanh_scale (d sqrt(1 - abar)/dt - 1e-4)) + 1.5, normalised: 2.5 where the noise
    level still changes, 0.5 in the convergence area. Pair it with `weighting=p2` (P2 with k = 1,
    gamma = 1 is 1 - abar) to reproduce that variant.
    """

    name = "tanh"

    def __init__(self, schedule: Schedule, *, tanh_scale: float = 1e6, dual_pivot=None):
        super().__init__(schedule)
        slope = schedule.derivative(np.sqrt(1.0 - schedule.alphas_cumprod))
        weights = np.tanh(tanh_scale * (slope - PIVOT_THRESHOLD)) + 1.5
        self._probs = weights / weights.sum()
        self._enable_dual(dual_pivot)

    @property
    def probs(self) -> np.ndarray:
        return self._probs

    def describe(self) -> str:
        return f"{self.name} (5:1 step at M={self.pivot}, dual)"


class LogitNormalSampling(SamplingMode):
    """SD3's logit-normal timestep density, transferred to a DDPM schedule through the SNR.

    A rectified-flow time u with the same SNR as step t has logit(u) = -log(SNR_t) / 2, so
    logit(u) ~ N(lognorm_mean, lognorm_std^2) means log SNR ~ N(-2 mean, 4 std^2). The
    distribution is discretised as p_t proportional to N(x_t; mean, std) |dx_t/dt| with
    x_t = -log(SNR_t) / 2, i.e. the probability mass of each step's interval.
    """

    name = "lognorm"

    def __init__(self, schedule: Schedule, *, lognorm_mean: float = 0.0, lognorm_std=1.0):
        super().__init__(schedule)
        if not lognorm_std > 0:
            raise ValueError(f"lognorm_std must be > 0, got {lognorm_std}")
        self.mean, self.std = float(lognorm_mean), float(lognorm_std)
        x = -0.5 * np.log(schedule.snr)
        density = np.exp(-0.5 * ((x - self.mean) / self.std) ** 2)
        weights = density * np.abs(schedule.derivative(x))
        self._probs = weights / weights.sum()

    @property
    def probs(self) -> np.ndarray:
        return self._probs

    def describe(self) -> str:
        return f"{self.name} (mean={self.mean:g}, std={self.std:g})"


class CurriculumSampling(SamplingMode):
    """CLTS: a uniform distribution that moves toward a Gaussian over training.

    p_t(step) = lam N(u_t; clts_mean, clts_std^2) + (1 - lam) / T, lam = min(step / clts_steps, 1)
    with u_t = timestep / num_original_steps and the Gaussian normalised over the indices. The
    Gaussian sits on the hard steps (u about 0.3, Xu et al. 2024). `clts_std` defaults to 1.0 (in
    units of T), the width SpeeD's comparison code meant before its `/ 2 * T**2` precedence slip
    collapsed it to one step; its lam also grew past 1 (negative probabilities), clamped here.
    """

    name = "clts"

    def __init__(self, schedule: Schedule, *, clts_mean=0.3, clts_std=1.0, clts_steps=50_000):
        super().__init__(schedule)
        if not clts_std > 0 or not clts_steps > 0:
            raise ValueError(f"clts_std and clts_steps must be > 0, got {clts_std}, {clts_steps}")
        self.mean, self.std, self.steps = float(clts_mean), float(clts_std), int(clts_steps)
        u = schedule.timesteps / schedule.num_original_steps
        gauss = np.exp(-0.5 * ((u - self.mean) / self.std) ** 2)
        self._gauss = gauss / gauss.sum()
        self.step = 0

    def set_step(self, step: int) -> None:
        self.step = int(step)

    @property
    def mix(self) -> float:
        """Weight of the Gaussian at the current step, in [0, 1]."""
        return min(max(self.step, 0) / self.steps, 1.0)

    @property
    def probs(self) -> np.ndarray:
        uniform = 1.0 / self.schedule.num_timesteps
        return self.mix * self._gauss + (1.0 - self.mix) * uniform

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.set_step(state["step"])

    def describe(self) -> str:
        return f"{self.name} (mean={self.mean:g}T, std={self.std:g}T, over {self.steps} steps)"


class LossSecondMomentSampling(SamplingMode):
    """ADM's loss-aware sampler: p_t proportional to sqrt(E[L_t^2]) over a short loss history.

    Keeps the last `history_per_term` losses of every index; until every index has a full history
    it samples uniformly. Afterwards p = (1 - uniform_prob) sqrt(mean L^2) / sum + uniform_prob / T,
    and each draw carries the importance weight 1 / (T p_t), so E[w L] is the uniform-t loss.
    """

    name = "loss_second_moment"

    def __init__(self, schedule: Schedule, *, history_per_term=10, uniform_prob=0.001):
        super().__init__(schedule)
        if int(history_per_term) < 1 or not 0 < uniform_prob <= 1:
            raise ValueError(
                f"need history_per_term >= 1 and 0 < uniform_prob <= 1, "
                f"got {history_per_term}, {uniform_prob}"
            )
        self.history_per_term, self.uniform_prob = int(history_per_term), float(uniform_prob)
        self._history = np.zeros((schedule.num_timesteps, self.history_per_term))
        self._counts = np.zeros(schedule.num_timesteps, dtype=np.int64)

    @property
    def warmed_up(self) -> bool:
        return bool((self._counts == self.history_per_term).all())

    @property
    def probs(self) -> np.ndarray:
        size = self.schedule.num_timesteps
        rms = np.sqrt(np.mean(self._history**2, axis=-1))
        if not self.warmed_up or rms.sum() == 0:
            return np.full(size, 1.0 / size)
        return (1.0 - self.uniform_prob) * rms / rms.sum() + self.uniform_prob / size

    def draw(self, n: int, generator: torch.Generator | None = None):
        probs = torch.from_numpy(self.probs)
        t = torch.multinomial(probs, n, replacement=True, generator=generator)
        return t, 1.0 / (probs.numel() * probs[t])

    def update_with_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record (index, loss) pairs from every rank, oldest history entry dropped first."""
        t, losses = all_gather_rows(t.detach().long(), losses.detach().double())
        for step, loss in zip(t.cpu().tolist(), losses.cpu().tolist()):
            if self._counts[step] == self.history_per_term:
                self._history[step, :-1] = self._history[step, 1:]
                self._history[step, -1] = loss
            else:
                self._history[step, self._counts[step]] = loss
                self._counts[step] += 1

    def state_dict(self) -> dict:
        return {
            "history": torch.from_numpy(self._history.copy()),
            "counts": torch.from_numpy(self._counts.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        history = state["history"].double().numpy()
        if history.shape != self._history.shape:
            raise ValueError(f"loss history shape {history.shape} != {self._history.shape}")
        self._history = history.copy()
        self._counts = state["counts"].long().numpy().copy()

    def describe(self) -> str:
        return f"{self.name} (history={self.history_per_term}, uniform_prob={self.uniform_prob:g})"


SAMPLING_MODES: dict[str, type[SamplingMode]] = {
    cls.name: cls
    for cls in (
        UniformSampling,
        SpeedSampling,
        AsymmetricSampling,
        TanhSampling,
        LogitNormalSampling,
        CurriculumSampling,
        LossSecondMomentSampling,
    )
}
