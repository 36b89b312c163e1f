"""Checks of a training config against its data and world before a step is taken: each a
one-line ConfigError naming what to change (or, for ranks out of sync, an internal error)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from speed.config import ConfigError
from speed.utils.distributed import all_gather_objects


def micro_batch_size(cfg: DictConfig, world_size: int) -> int:
    """Per-process micro-batch: global_batch_size / (world x grad_accum), else data.batch_size."""
    if cfg.global_batch_size is None:
        return int(cfg.data.batch_size)
    per_step = world_size * cfg.grad_accum
    if cfg.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} is not divisible by "
            f"world_size x grad_accum = {world_size} x {cfg.grad_accum}; change one of them"
        )
    return cfg.global_batch_size // per_step


def check_one_step(cfg: DictConfig, num_items: int, micro_batch: int, world_size: int) -> None:
    """An epoch must hold at least one optimizer step: batches are full (drop_last), so a dataset
    smaller than one global batch would train nothing and stop at once."""
    global_batch = micro_batch * world_size * cfg.grad_accum
    if num_items < global_batch:
        raise ConfigError(
            f"data: {num_items} items are fewer than one global batch of {global_batch} "
            f"(batch {micro_batch} x {world_size} process(es) x grad_accum {cfg.grad_accum}), "
            "so no step could be taken; lower data.batch_size / global_batch_size or add data"
        )


def check_control(cfg: DictConfig) -> None:
    """A control branch trains alone over its base, from images (its control images are
    computed from them)."""
    if cfg.adapter.rank:
        raise ConfigError("a control branch trains over a plain base; set adapter.rank=0")
    if cfg.ckpt_path:
        raise ConfigError(
            "a control run starts from control.base, not ckpt_path; unset ckpt_path (resume=true "
            "continues a control run)"
        )


def check_latent_cache(dataset, autoencoder) -> None:
    """A latent cache must be decoded by the autoencoder that wrote it (sample grids, inference)."""
    if not dataset.is_latent:
        return
    made_by = dataset.metadata.get("autoencoder"), dataset.scale
    if made_by != (autoencoder.name, autoencoder.scale):
        raise ConfigError(
            f"data: the latent cache was written by {made_by[0]} (scale {made_by[1]}) but "
            f"autoencoder is {autoencoder.name} (scale {autoencoder.scale}); set autoencoder to "
            "the one used by -p extract"
        )


def check_ranks_in_sync(model: torch.nn.Module) -> None:
    """All ranks must hold the same weights (DDP keeps them equal); fail loudly if not."""
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    checksums = all_gather_objects(checksum)
    if len(set(checksums)) > 1:
        raise RuntimeError(f"ranks hold different weights (parameter checksums {checksums})")
