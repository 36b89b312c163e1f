"""A run's checkpoints: listing, pruning, which one training resumes from (skipping one that does
not load) and which one sampling reads."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from speed.errors import ConfigError, DataError, MissingFileError
from speed.models.loading import checksum_path
from speed.run.folders import RunDir, checkpoint_step

if TYPE_CHECKING:
    from speed.run.state import TrainState


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Step-named checkpoints in `ckpt_dir`, oldest first (temporary files are ignored)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob("*.pt") if p.stem.isdigit()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep: int, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest `keep` checkpoints, sparing steps divisible by `keep_every`.

    `keep <= 0` keeps everything. Returns the deleted paths.
    """
    if keep <= 0:
        return []
    deleted = []
    for path in list_checkpoints(ckpt_dir)[:-keep]:
        if keep_every > 0 and checkpoint_step(path) % keep_every == 0:
            continue
        path.unlink()
        checksum_path(path).unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def resume_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint training resumes from: `resume: true` -> the run's newest (None if it has
    none yet), `resume: <path>` -> that file; None when not resuming."""
    candidates = resume_candidates(cfg)
    return candidates[0] if candidates else None


def resume_candidates(cfg: DictConfig) -> list[Path]:
    """The checkpoints training may resume from, to try in order: `resume: true` -> the run's
    checkpoints newest first (empty if it has none yet), `resume: <path>` -> that file only."""
    if cfg.resume is True:
        return list_checkpoints(RunDir.of(cfg).checkpoints)[::-1]
    if cfg.resume in (False, None, ""):
        return []
    path = Path(str(cfg.resume))
    if not path.is_file():
        raise MissingFileError(f"resume: no checkpoint at {path}")
    return [path]


def load_newest_good(state: TrainState, candidates: list[Path], rank: int = 0, **kwargs) -> Path:
    """Restore `state` from the first of `candidates` that loads (`TrainState.load` with
    `kwargs`); a corrupt, truncated or empty one is skipped with a warning naming it. Returns the
    path used; DataError when none loads."""
    for i, path in enumerate(candidates):
        try:
            state.load(path, rank=rank, **kwargs)
            return path
        except DataError as error:
            if i + 1 == len(candidates):
                if len(candidates) == 1:
                    raise
                raise DataError(
                    f"resume: none of the {len(candidates)} checkpoints loads; the oldest: {error}"
                ) from None
            if rank == 0:
                warnings.warn(
                    f"resume: skipping {path} ({error}); trying {candidates[i + 1]}", stacklevel=2
                )
    raise MissingFileError("resume: no checkpoint to resume from")


def claim_train_dir(run: RunDir, overwrite: bool) -> None:
    """Make the train folder of a fresh run; refuse one holding another run's checkpoints unless
    `overwrite` (which deletes them)."""
    if latest_checkpoint(run.checkpoints) is not None and not overwrite:
        raise ConfigError(
            f"{run.train} already holds checkpoints; pass resume=true to continue that run, "
            "overwrite=true to start over, or choose another experiment_dir"
        )
    if overwrite:
        for path in run.checkpoints.glob("*.pt"):
            path.unlink()
            checksum_path(path).unlink(missing_ok=True)
        run.time_budget_record.unlink(missing_ok=True)
    run.train.mkdir(parents=True, exist_ok=True)


def sampling_checkpoint(cfg: DictConfig) -> Path:
    """`ckpt_path` if set, else the newest checkpoint of `experiment_dir`'s training run."""
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path)
        if path.is_dir():
            raise ConfigError(
                f"ckpt_path {path} is a folder, not a checkpoint file (a run's checkpoints are "
                "in <experiment_dir>/train/checkpoints/<step>.pt)"
            )
        if not path.is_file():
            raise MissingFileError(f"ckpt_path: no checkpoint at {path}")
        return path
    ckpt_dir = RunDir.of(cfg).checkpoints
    path = latest_checkpoint(ckpt_dir)
    if path is None:
        raise MissingFileError(
            f"no checkpoint in {ckpt_dir}; train first (-p train) or set ckpt_path=<file.pt>"
        )
    return path
