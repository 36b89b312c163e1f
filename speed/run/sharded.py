"""Training checkpoints of fully sharded runs (`strategy: fsdp`, see `speed.utils.fsdp`).

A checkpoint at step s is two entries of train/checkpoints/:

    0005000.pt     the consolidated weights under a DDP checkpoint's keys (model, ema, emas) and
                   every progress key (step, schedules, RNG, config), `opt` None, `shards`
                   naming the folder below and `shards_manifest` the sha256 of its manifest:
                   inference, sample and the official-format loaders read it unchanged (an
                   adapter or control run's: its weights only and its `adapter` record, as
                   under DDP; the folder below holds the whole model)
    0005000.dcp/   torch.distributed.checkpoint's folder of the sharded model, optimizer state
                   and EMAs: each rank's shards plus metadata, so N ranks' save resumes on M;
                   and SHA256SUMS, the sha256 of every other file (`sha256sum -c` format)

The folder is written under a temporary name, its manifest last, then renamed; then the .pt is
written atomically with its own checksum: a .pt exists only beside a complete folder, and
checkpoint listing, pruning and resuming go by the .pt as for DDP.

Loading verifies before it unpickles: the .pt against its checksum, the manifest against the
sha256 the .pt recorded, every shard and the metadata against the manifest; then the metadata is
read without running code (`speed.utils.safe_dcp`). A mismatch, a truncated or garbage shard is
one DataError line on every rank, which `speed.run.load_newest_good` answers by falling back to
the previous checkpoint. The ranks share the hashing: rank r takes every W-th file. Like
torch.distributed.checkpoint itself, this assumes the ranks see one shared file system.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from speed.errors import DataError, MissingFileError
from speed.models.loading import file_sha256, load_checkpoint, save_checkpoint
from speed.run import TrainState, list_checkpoints
from speed.utils.atomic import atomic_write
from speed.utils.distributed import (
    all_gather_objects,
    barrier,
    get_rank,
    get_world_size,
    raise_on_every_rank,
)
from speed.utils.fsdp import full_state_dict, load_sharded, save_sharded

SHARDS_SUFFIX = ".dcp"
MANIFEST = "SHA256SUMS"


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


def write_manifest(folder: str | os.PathLike) -> str | None:
    """Write `folder/SHA256SUMS`, the sha256 of every other file of the folder, atomically (a
    collective: each rank hashes its share of the files). Returns the manifest's own sha256 on
    rank 0, None on the others."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    names = all_gather_objects(names)[0]  # rank 0's listing, the same share on every rank
    mine = {name: file_sha256(folder / name) for name in names[get_rank() :: get_world_size()]}
    digests = {name: d for share in all_gather_objects(mine) for name, d in share.items()}
    if get_rank() != 0:
        return None
    text = "".join(f"{digests[name]}  {name}\n" for name in names)
    atomic_write(folder / MANIFEST, text)
    return hashlib.sha256(text.encode()).hexdigest()


def verify_shards(folder: str | os.PathLike, manifest_sha256: str) -> None:
    """Check `folder` against its manifest, and the manifest against `manifest_sha256` (what the
    checkpoint file recorded), before anything in it is read. A collective; DataError naming
    the first problem, on every rank."""
    raise_on_every_rank(_shards_problem(Path(folder), manifest_sha256))


def _shards_problem(folder: Path, manifest_sha256: str) -> DataError | None:
    """This rank's share of `verify_shards`: the first problem found, or None."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return DataError(f"sharded checkpoint {folder} has no {MANIFEST}")
    text = manifest.read_bytes()
    if hashlib.sha256(text).hexdigest() != manifest_sha256:
        return DataError(
            f"sharded checkpoint {folder} is corrupt: {MANIFEST} does not match the sha256 its "
            "checkpoint file recorded"
        )
    entries = [line.split(maxsplit=1) for line in text.decode(errors="replace").splitlines()]
    for entry in entries[get_rank() :: get_world_size()]:
        digest, name = entry if len(entry) == 2 else ("", "?")
        path = folder / name
        if Path(name).name != name or not path.is_file():
            return DataError(f"sharded checkpoint {folder} is incomplete: no {name}")
        if file_sha256(path) != digest:
            return DataError(
                f"sharded checkpoint {folder} is corrupt: {name} does not match its sha256 in "
                f"{MANIFEST} (the file changed after it was written)"
            )
    return None


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
        save_sharded(tmp, self.model, self.optimizer, zip(names, self.emas), self.companions())
        model = self.saved(self.model)
        emas = {name: self.saved(ema) for name, ema in zip(names, self.emas)}
        barrier()
        manifest = write_manifest(tmp)
        if main:
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
            weights = {"model": model, "ema": emas[names[0]], "emas": emas, "opt": None}
            progress = self.progress_state_dict(rng)
            shards = {"shards": folder.name, "shards_manifest": manifest}
            adapter = {"adapter": self.adapter.record()} if self.adapter.enabled else {}
            save_checkpoint({**weights, **progress, **shards, **adapter}, path)
        barrier()
        return path

    def saved(self, model) -> dict:
        """What the consolidated file holds of `model`: its full state dict on rank 0 (a
        collective), filtered to the adapter's or control branch's keys when one trains over a
        frozen base (as TrainState saves it)."""
        full = full_state_dict(model)
        keys = self.adapter.state_dict(model).keys()  # this rank's shards, named as in full
        return {k: v for k, v in full.items() if k in keys}

    def companions(self) -> dict:
        """What the optimizer trains beside the model and the shards hold: REPA's projector."""
        trained = self.alignment is not None and len(list(self.alignment.parameters())) > 0
        return {"alignment": self.alignment} if trained else {}

    def load(
        self, path: str | os.PathLike, rank: int = 0, world_size: int = 1, trust: bool = False
    ) -> None:
        """Restore from the checkpoint file `path` (checked as `load_checkpoint` checks it) and
        its shard folder (verified against its manifest first; never unpickled in full unless
        `trust`); an EMA rate the run did not save starts from the first saved EMA (as
        TrainState does)."""
        path = Path(path)
        ckpt = load_checkpoint(path, trust=trust)
        self.check_experiment(ckpt, path, rank)
        self.adapter.check(ckpt.get("adapter"), path)
        folder = path.parent / ckpt["shards"] if ckpt.get("shards") else shards_folder(path)
        if not folder.is_dir():
            raise MissingFileError(
                f"{path} has no sharded state ({folder.name}/, written by strategy=fsdp); "
                "resume it with strategy=ddp"
            )
        if ckpt.get("shards_manifest"):
            verify_shards(folder, ckpt["shards_manifest"])
        elif rank == 0:
            warnings.warn(
                f"{folder} has no {MANIFEST} (written before shards were checksummed): its "
                "shards cannot be verified",
                stacklevel=2,
            )
        saved = list(ckpt["emas"])
        names = [str(r) if str(r) in saved else saved[0] for r in self.ema_rates]
        emas = zip(names, self.emas)
        load_sharded(folder, self.model, self.optimizer, emas, trust, self.companions())
        bad = self.nonfinite_entry()
        nonfinite = DataError(f"checkpoint {path} holds non-finite values (NaN/inf in {bad})")
        raise_on_every_rank(nonfinite if bad else None)
        self.load_progress(ckpt, rank, world_size)
