"""Respacing: a diffusion that keeps a subset of the original timesteps (Nichol & Dhariwal 2021, 4).

Keeping timesteps S = {s_0 < s_1 < ...} of a T-step diffusion gives a shorter one with the same
marginals q(x_{s_i} | x_0): its betas are beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}} with
abar_{s_{-1}} = 1, so its abar'_i equals the original abar_{s_i}. The model is still called with
original timesteps.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from speed.diffusion.gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """Which of the original timesteps 0..num_timesteps-1 to keep (guided-diffusion's semantics).

    Args:
        section_counts: either "ddimN": the N timesteps 0, k, 2k, ... of the one integer stride k
            that yields exactly N of them (DDIM's schedule); or "N" / "N1,N2,..." (or a list of
            ints): split the timesteps into equal sections and take N_i evenly spaced steps (ends
            included) from section i, e.g. "10,15,20" with T = 300 takes 10 steps from 0..99,
            15 from 100..199 and 20 from 200..299.
    Returns:
        the set of kept original timesteps.
    """
    if isinstance(section_counts, str):
        text = section_counts.strip()
        if text.startswith("ddim"):
            desired = _parse_int(text[len("ddim") :], section_counts)
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(
                f"timestep_respacing {section_counts!r}: no integer stride gives exactly {desired} "
                f"of {num_timesteps} steps; use an even spacing such as '{desired}'"
            )
        section_counts = [_parse_int(part, section_counts) for part in text.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    section_counts = list(section_counts)
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(
                f"timestep_respacing {section_counts}: cannot take {count} steps from a section "
                f"of {size} timesteps (each count must be between 1 and the section size)"
            )
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0  # accumulated like guided-diffusion, so rounding ties match it
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


def _parse_int(text: str, spec) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"invalid timestep_respacing {spec!r}: use '' (all steps), 'N', 'N1,N2,...' or 'ddimN'"
        ) from None


class _WrappedModel:
    """Calls `model` with original timesteps: model(x, timestep_map[t], **kwargs)."""

    def __init__(self, model, timestep_map: np.ndarray):
        self.model = model
        self.timestep_map = timestep_map

    def __call__(self, x, ts, **kwargs):
        table = torch.as_tensor(self.timestep_map, device=ts.device, dtype=ts.dtype)
        return self.model(x, table[ts], **kwargs)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion over the kept timesteps `use_timesteps` of a base diffusion.

    Args:
        use_timesteps: iterable of original timesteps to keep.
        **kwargs: GaussianDiffusion's arguments for the base (original) diffusion.
    Index i of this diffusion stands for original timestep `timestep_map[i]`; the base tables stay
    available as `base_betas`, `base_alphas_cumprod` and `original_num_steps`.
    """

    def __init__(self, use_timesteps: Iterable[int], **kwargs):
        base = GaussianDiffusion(**kwargs)
        kept = np.array(sorted({int(s) for s in use_timesteps}), dtype=np.int64)
        if kept.size == 0 or kept[0] < 0 or kept[-1] >= base.num_timesteps:
            raise ValueError(
                f"use_timesteps must be a non-empty subset of 0..{base.num_timesteps - 1}"
            )
        abar = base.alphas_cumprod[kept]
        kwargs["betas"] = 1.0 - abar / np.append(1.0, abar[:-1])
        super().__init__(**kwargs)
        self.use_timesteps = set(kept.tolist())
        self.timestep_map = kept
        self.original_num_steps = base.num_timesteps
        self.base_betas = base.betas
        self.base_alphas_cumprod = base.alphas_cumprod

    def _wrap_model(self, model):
        if isinstance(model, _WrappedModel):
            return model
        return _WrappedModel(model, self.timestep_map)

    def p_mean_variance(self, model, *args, **kwargs):
        return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

    def training_losses(self, model, *args, **kwargs):
        return super().training_losses(self._wrap_model(model), *args, **kwargs)


def respace(diffusion: GaussianDiffusion, use_timesteps: Iterable[int]) -> SpacedDiffusion:
    """A SpacedDiffusion over `use_timesteps` (original timesteps) of `diffusion`'s base schedule,
    with the same mean, variance and loss types. Works for respaced and full diffusions alike."""
    return SpacedDiffusion(
        use_timesteps,
        betas=diffusion.base_betas,
        model_mean_type=diffusion.model_mean_type,
        model_var_type=diffusion.model_var_type,
        loss_type=diffusion.loss_type,
    )
