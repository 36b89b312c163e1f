"""The training state a checkpoint holds: `TrainState` writes and reads its keys."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from speed.adapters import NoAdapter
from speed.errors import ConfigError, DataError
from speed.models.loading import load_checkpoint, nonfinite_keys, save_checkpoint
from speed.run.identity import compare_experiment
from speed.utils.seeding import set_rng_state


@dataclass
class TrainState:
    """Everything a resumed training run needs to continue as if never stopped. `state_dict` /
    `save` write a training checkpoint and `load_state_dict` / `load` read the same keys back:

    model, ema (the first EMA: what sampling and DiT's tools read), emas (rate -> weights), opt,
    scaler (None unless fp16), lr_scheduler, timestep_sampler, step, epoch, batches_in_epoch,
    train_seconds (the training time so far, which `max_training_seconds` bounds), rng
    (every rank's RNG states, by rank), data_spec (what the model sees), objective (the family
    of the objective that trained it: "gaussian", "interpolant"), config (resolved); with an
    adapter (`speed.adapters`) or a control branch (`speed.control.ControlNet`, which has the
    adapter's interface), model, ema and emas hold its weights only and `adapter` records it and
    its base checkpoint.
    """

    model: nn.Module
    emas: list[nn.Module]
    ema_rates: list[float]
    optimizer: Any
    lr_scheduler: Any
    scaler: Any  # torch.amp.GradScaler or None
    timestep_sampler: Any
    data_spec: dict
    config: dict
    step: int = 0
    epoch: int = 0  # data epochs finished
    batches_in_epoch: int = 0  # micro-batches of the current epoch already trained on
    train_seconds: float = 0.0  # wall-clock seconds of training steps, summed over resumes
    experiment: dict = field(default_factory=dict)  # speed.run.identity.experiment_record
    resume_changes: tuple = ()  # recorded keys a resume may change (`resume_changes`)
    objective: str = "gaussian"  # the training objective's family (which samplers fit it)
    alignment: nn.Module | None = None  # REPA's projector (trained, saved; None or no params: off)
    adapter: Any = field(default_factory=NoAdapter)  # what of the model is saved (or ControlNet)

    def trainable_parameters(self):
        """The parameters the optimizer updates: the model's, then the alignment's."""
        yield from self.model.parameters()
        if self.alignment is not None:
            yield from self.alignment.parameters()

    def state_dict(self, rng: list[dict]) -> dict:
        saved = self.adapter.state_dict  # the whole model's, or only its adapter's
        return {
            "model": saved(self.model),
            "ema": saved(self.emas[0]),
            "emas": {str(rate): saved(ema) for rate, ema in zip(self.ema_rates, self.emas)},
            "opt": self.optimizer.state_dict(),
            **({"alignment": self.alignment.state_dict()} if self.alignment is not None else {}),
            **({"adapter": self.adapter.record()} if self.adapter.enabled else {}),
            **self.progress_state_dict(rng),
        }

    def nonfinite_entry(self) -> str | None:
        """The first model, EMA or optimizer-state tensor holding NaN/inf on this rank (its own
        shards under FSDP), as a dotted key; None when all are finite."""
        tree = {
            "model": self.model.state_dict(),
            "emas": {str(rate): ema.state_dict() for rate, ema in zip(self.ema_rates, self.emas)},
            "opt": self.optimizer.state_dict()["state"],
        }
        return next(nonfinite_keys(tree), None)

    def progress_state_dict(self, rng: list[dict]) -> dict:
        """Every key but the weights and the optimizer state: schedules, counters, RNG, config."""
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "timestep_sampler": self.timestep_sampler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "train_seconds": self.train_seconds,
            "rng": rng,
            "data_spec": dict(self.data_spec),
            "objective": self.objective,
            "config": self.config,
            "experiment": dict(self.experiment),
        }

    def load_state_dict(self, ckpt: Mapping, source, rank: int = 0, world_size: int = 1) -> None:
        """Restore from `ckpt`; this rank's RNG states only when it was saved by as many ranks
        (another world size draws fresh ones; the per-step training randomness does not depend
        on them)."""
        if ckpt["opt"] is None:
            raise ConfigError(f"{source} was written by strategy=fsdp; resume it with that")
        self.adapter.check(ckpt.get("adapter"), source)
        self.adapter.load_state_dict(self.model, ckpt["model"], source)
        for ema, rate in zip(self.emas, self.ema_rates):
            self.adapter.load_state_dict(ema, ckpt["emas"].get(str(rate), ckpt["ema"]), source)
        if self.alignment is not None:
            self.alignment.load_state_dict(ckpt.get("alignment", {}))
        self.optimizer.load_state_dict(ckpt["opt"])
        self.load_progress(ckpt, rank, world_size)

    def load_progress(self, ckpt: Mapping, rank: int = 0, world_size: int = 1) -> None:
        """Restore what `progress_state_dict` wrote (after the optimizer: its lr is set here);
        a checkpoint of another objective is refused."""
        self.check_objective(ckpt)
        self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.timestep_sampler.load_state_dict(ckpt.get("timestep_sampler", {}))
        self.step, self.epoch = ckpt["step"], ckpt["epoch"]
        self.batches_in_epoch = ckpt["batches_in_epoch"]
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))  # older checkpoints: unknown
        if len(ckpt["rng"]) == world_size:
            set_rng_state(ckpt["rng"][rank])

    def save(self, path: str | os.PathLike, rng: list[dict]) -> Path:
        """Write the checkpoint to `path` atomically, with its checksum."""
        return save_checkpoint(self.state_dict(rng), path)

    def load(
        self, path: str | os.PathLike, rank: int = 0, world_size: int = 1, trust: bool = False
    ) -> None:
        """Restore from the checkpoint at `path` (checked by `load_checkpoint`, `trust` too);
        DataError, state untouched, when it is no training checkpoint."""
        ckpt = load_checkpoint(path, trust)
        missing = [k for k in ("model", "ema", "emas", "opt", "step", "rng") if k not in ckpt]
        if missing:
            raise DataError(
                f"checkpoint {path} is no training checkpoint of this project "
                f"(no {', '.join(missing)}); use ckpt_path= for weights to start from"
            )
        self.check_experiment(ckpt, path, rank)
        self.load_state_dict(ckpt, path, rank, world_size)

    def check_experiment(self, ckpt: Mapping, source, rank: int = 0) -> None:
        """ConfigError when the experiment `ckpt` records is not this state's, but for the
        keys in `resume_changes` (see `speed.run.identity`)."""
        self.check_objective(ckpt)  # the most specific difference first
        saved = ckpt.get("experiment")
        compare_experiment(saved, self.experiment, self.resume_changes, source, rank)

    def check_objective(self, ckpt: Mapping) -> None:
        """ConfigError when `ckpt` was trained with another objective than this state's."""
        trained = ckpt.get("objective", self.objective)
        if trained != self.objective:
            raise ConfigError(
                f"this checkpoint was trained with the {trained} objective; resuming it with the "
                f"{self.objective} objective would change the task: keep its diffusion node"
            )

    @staticmethod
    def stored_objective(ckpt: Mapping) -> str | None:
        """The objective family a loaded file records (None for official weights and files
        written before checkpoints recorded it)."""
        return ckpt.get("objective") if isinstance(ckpt, Mapping) else None

    @staticmethod
    def stored_data_spec(ckpt: Mapping) -> dict | None:
        """The data spec a loaded file records (None for official DiT / ADM weights)."""
        return ckpt.get("data_spec") if isinstance(ckpt, Mapping) else None
