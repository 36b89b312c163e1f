"""A seeded, resumable distributed sampler and the DataLoader built around it."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from speed.errors import ConfigError


class ResumableSampler(Sampler[int]):
    """DistributedSampler's order, with a start position for resuming mid-epoch.

    Epoch e shuffles with torch.randperm seeded by seed + e (or keeps 0..N-1 without shuffle),
    then trims (drop_last) or pads by wrapping around to a multiple of world_size; rank r takes
    positions r, r + W, r + 2W, ... So the ranks partition the epoch, and the order depends only on
    (seed, epoch, N, W). `set_start(k)` skips the first k indices of this rank's share, so a run
    resumed after k samples sees exactly the indices it would have seen.

    Args:
        dataset_len: N, the number of items.
        rank, world_size: this process's rank r and the number of processes W.
        shuffle: shuffle each epoch (else 0..N-1 in order).
        seed: base seed of the per-epoch permutations.
        drop_last: trim to floor(N / W) * W items (else pad to ceil(N / W) * W).
    """

    def __init__(
        self,
        dataset_len: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"ResumableSampler: need 0 <= rank < world_size, got {rank}, {world_size}"
            )
        if dataset_len < (world_size if drop_last else 1):
            raise ConfigError(
                f"ResumableSampler: {dataset_len} items cannot be split over {world_size} ranks"
            )
        self.dataset_len = dataset_len
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        per_rank = dataset_len / world_size
        self.num_samples = math.floor(per_rank) if drop_last else math.ceil(per_rank)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's permutation; also resets the start position to 0."""
        self.epoch = epoch
        self.start = 0

    def set_start(self, index: int) -> None:
        """Skip the first `index` items of this rank's share of the current epoch."""
        if not 0 <= index <= self.num_samples:
            raise ValueError(
                f"ResumableSampler: start {index} outside this rank's epoch of {self.num_samples}"
            )
        self.start = index

    def epoch_indices(self) -> list[int]:
        """This rank's full share of the current epoch (ignoring the start position)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=generator).tolist()
        else:
            order = list(range(self.dataset_len))
        total = self.num_samples * self.world_size
        if total > len(order):
            order = (order * math.ceil(total / len(order)))[:total]
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and python in a DataLoader worker from its torch seed (base seed + worker id,
    which the loader's generator makes deterministic)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader over `sampler` with full batches only and deterministic worker seeds.

    Args:
        batch_size: items per batch (per process).
        num_workers: worker processes (0 = load in this process); kept alive across epochs.
        pin_memory: page-locked host batches for faster host-to-GPU copies.
        seed: seeds the generator from which the workers' base seed is drawn; combined with the
            sampler's rank r of W (if it has them) as seed * W + r, like the training seeds, so
            the ranks' workers don't repeat each other's random flips.
    """
    if batch_size < 1:
        raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
    rank, world_size = getattr(sampler, "rank", 0), getattr(sampler, "world_size", 1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed * world_size + rank),
        persistent_workers=num_workers > 0,
    )
