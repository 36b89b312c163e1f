"""Seeding and RNG-state capture, so a resumed run draws the same random numbers."""

from __future__ import annotations

import random

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
