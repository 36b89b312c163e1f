"""Training checkpoints of fully sharded runs (`strategy: fsdp`, see `speed.utils.fsdp`).

A checkpoint at step s is two entries of train/checkpoints/:

    0005000.pt     the consolidated weights under a DDP checkpoint's keys (model, ema, emas) and
                   every progress key (step, schedules, RNG, config), `opt` None and `shards`
                   naming the folder below: inference, sample and the official-format loaders
                   read it unchanged
    0005000.dcp/   torch.distributed.checkpoint's folder of the sharded model, optimizer state
                   and EMAs: each rank's shards plus metadata, so N ranks' save resumes on M

The folder is written under a temporary name and renamed, then the .pt is written atomically:
a .pt exists only beside a complete folder, and checkpoint listing, pruning and resuming go by
the .pt as for DDP.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from speed.errors import MissingFileError
from speed.models.loading import load_checkpoint, save_checkpoint
from speed.run import TrainState, list_checkpoints
from speed.utils.distributed import barrier, get_rank
from speed.utils.fsdp import full_state_dict, load_sharded, save_sharded

SHARDS_SUFFIX = ".dcp"


def shards_folder(ckpt: str | os.PathLike) -> Path:
    """The sharded-state folder beside the checkpoint file `ckpt`."""
    return Path(ckpt).with_suffix(SHARDS_SUFFIX)


def prune_shards(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Delete the shard folders whose checkpoint file is gone (pruned, or overwritten runs);
    returns them."""
    kept = {shards_folder(p) for p in list_checkpoints(ckpt_dir)}
    orphans = [p for p in Path(ckpt_dir).glob(f"*{SHARDS_SUFFIX}") if p not in kept]
    for folder in orphans:
        shutil.rmtree(folder)
    return orphans


@dataclass
class ShardedTrainState(TrainState):
    """TrainState of a sharded model, EMAs and optimizer. `save` and `load` are collectives:
    every rank calls them; rank 0 writes the consolidated file."""

    def save(self, path: str | os.PathLike, rng: list[dict]) -> Path:
        path = Path(path)
        folder = shards_folder(path)
        tmp = folder.with_name(f".{folder.name}.tmp")
        main = get_rank() == 0
        if main:
            path.unlink(missing_ok=True)  # never a .pt beside another save's shards
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
        barrier()
        names = [str(rate) for rate in self.ema_rates]
        save_sharded(tmp, self.model, self.optimizer, zip(names, self.emas))
        model = full_state_dict(self.model)
        emas = {name: full_state_dict(ema) for name, ema in zip(names, self.emas)}
        barrier()
        if main:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            weights = {"model": model, "ema": emas[names[0]], "emas": emas, "opt": None}
            progress = self.progress_state_dict(rng)
            save_checkpoint({**weights, **progress, "shards": folder.name}, path)
        barrier()
        return path

    def load(
        self, path: str | os.PathLike, rank: int = 0, world_size: int = 1, trust: bool = False
    ) -> None:
        """Restore from the checkpoint file `path` (checked as `load_checkpoint` checks it) and
        its shard folder; an EMA rate the run did not save starts from the first saved EMA (as
        TrainState does)."""
        path = Path(path)
        ckpt = load_checkpoint(path, trust=trust)
        folder = path.parent / ckpt["shards"] if ckpt.get("shards") else shards_folder(path)
        if not folder.is_dir():
            raise MissingFileError(
                f"{path} has no sharded state ({folder.name}/, written by strategy=fsdp); "
                "resume it with strategy=ddp"
            )
        saved = list(ckpt["emas"])
        names = [str(r) if str(r) in saved else saved[0] for r in self.ema_rates]
        load_sharded(folder, self.model, self.optimizer, zip(names, self.emas))
        self.load_progress(ckpt, rank, world_size)
