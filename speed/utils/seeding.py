"""Seeding and RNG-state capture, so a resumed run draws the same random numbers; noise drawn
from one generator per sample, so a sample does not depend on its batch."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(seed: int, *path: int) -> int:
    """An independent 63-bit seed for (run seed, purpose, index, ...) via numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, *path]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def get_rng_state() -> dict:
    """Every generator's state of this process, for a checkpoint. Only tensors and Python
    values, so the checkpoint loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `get_rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]  # keys: a tensor, or an array in older checkpoints
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


Generators = torch.Generator | Sequence[torch.Generator] | None


def randn_rows(shape, generator: Generators, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise of `shape` [N, ...] from `generator`: one torch.Generator (or None,
    the global one) for the whole tensor, or a sequence of M generators, one per sample, where
    row r draws shape[1:] from generator[r % M], rows in order. N must then be a multiple of M:
    with classifier-free guidance's doubled batch [cond; uncond], sample i's unconditional copy
    draws from sample i's generator too, so what a sample draws never depends on the batch it is
    in (a request batched with others gets the noise it would get alone)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    count = len(generator)
    if count == 0 or shape[0] % count:
        raise ValueError(f"{count} per-sample generators cannot draw {shape[0]} rows")
    rows = [
        torch.randn(tuple(shape[1:]), generator=generator[r % count], device=device, dtype=dtype)
        for r in range(shape[0])
    ]
    return torch.stack(rows)
