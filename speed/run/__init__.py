"""A run's files: where each phase writes, its checkpoints, whether a phase is done, and the
training state a checkpoint holds. Every other module asks this one instead of spelling folder
names or checkpoint keys.

    <experiment_dir>/
      train/config.yaml, train/checkpoints/0005000.pt, train/logs/, train/samples/0005000.png
      inference/config.yaml, inference/<ckpt-stem>/000000.png ..., inference/<ckpt-stem>.npz
      sample/config.yaml, sample/<ckpt-stem>.png and .json
      (outputs of one checkpoint under other settings: <ckpt-stem>-<key=value,...>, see
      `speed.run.outputs.output_name`)
      latents/ (the `extract` phase's cache), curve/<tag>.json and curve/<tag>/ (FID curves)
      export/config.yaml, export/<ckpt-stem>.onnx, export/<ckpt-stem>.json (ONNX denoiser)

Checkpoints are named by training step (`0005000.pt`), written atomically with a sha256 sidecar
(`speed.models.save_checkpoint`), read with one checked, weights-only torch.load policy
(`speed.models.load_checkpoint`), and their keys are written and read by one object,
`TrainState`. Resuming skips a newest checkpoint that does not load for the one before it.

A phase's output folder is owned by one run at a time: `RunLock` (a `.lock` file holding the
owner's host and pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from speed.adapters import NoAdapter
from speed.config_schema import root_defaults
from speed.errors import ConfigError, DataError, MissingFileError, RunLockedError
from speed.models.loading import (
    checksum_path,
    load_checkpoint,
    nonfinite_keys,
    save_checkpoint,
)
from speed.run.identity import compare_experiment
from speed.run.outputs import (
    image_settings,
    npz_provenance,
    output_name,
    read_json,
    read_provenance,
    read_settings,
    same_output,
    settings_in_npz,
)
from speed.utils.bounded_yaml import load_yaml
from speed.utils.distributed import all_gather_objects
from speed.utils.logging import METRICS_FILE
from speed.utils.seeding import set_rng_state

CKPT_DIGITS = 7
CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
PHASE_FOLDERS = {
    "train": "train",
    "inference": "inference",
    "sample": "sample",
    "extract": "latents",
    "export": "export",
}
DONE, RESUME, NEW = "done", "resume", "new"


# ---- folders ----


@dataclass(frozen=True)
class RunDir:
    """The folders and files of the run at `root` (its `experiment_dir`)."""

    root: Path

    @classmethod
    def of(cls, cfg: DictConfig) -> RunDir:
        return cls(Path(cfg.experiment_dir))

    def phase(self, phase: str) -> Path:
        """The output folder of `phase` (train, inference, sample, extract, export)."""
        return self.root / PHASE_FOLDERS[phase]

    def config_file(self, phase: str) -> Path:
        """Where `phase` saves its resolved config."""
        return self.phase(phase) / CONFIG_FILE

    def saved_config(self, phase: str = "train") -> DictConfig:
        """The resolved config `phase` saved, over today's root defaults (so keys added to the
        project since the run was made take their defaults); MissingFileError when absent."""
        path = self.config_file(phase)
        if not path.is_file():
            raise MissingFileError(f"no {path}: is {self.root} the experiment_dir of a run?")
        return OmegaConf.merge(root_defaults(), load_yaml(path.read_text(), str(path)) or {})

    @property
    def train(self) -> Path:
        return self.phase("train")

    @property
    def checkpoints(self) -> Path:
        return self.train / "checkpoints"

    @property
    def logs(self) -> Path:
        """Training logs: tensorboard/, wandb/, metrics.jsonl."""
        return self.train / "logs"

    @property
    def metrics_file(self) -> Path:
        return self.logs / METRICS_FILE

    @property
    def inference(self) -> Path:
        return self.phase("inference")

    @property
    def sample(self) -> Path:
        return self.phase("sample")

    @property
    def latents(self) -> Path:
        return self.phase("extract")

    @property
    def export(self) -> Path:
        return self.phase("export")

    @property
    def curve(self) -> Path:
        return self.root / "curve"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    @property
    def time_budget_record(self) -> Path:
        """Where training that stopped on `max_training_seconds` says at which step and budget."""
        return self.train / "time_budget.json"

    def time_budget_step(self, max_training_seconds: float) -> int | None:
        """The step at which training stopped on this `max_training_seconds` (its checkpoint
        present), else None."""
        try:
            record = json.loads(self.time_budget_record.read_text())
        except (OSError, ValueError):
            return None
        step = record.get("step")
        if record.get("max_training_seconds") != max_training_seconds or not isinstance(step, int):
            return None
        return step if self.checkpoint(step).is_file() else None

    def training_grid(self, step: int) -> Path:
        """The sample grid drawn during training at `step`."""
        return self.train / "samples" / f"{checkpoint_stem(step)}.png"

    def inference_images(self, name: str) -> Path:
        """The folder of the PNGs of inference output `name` (`inference_name`)."""
        return self.inference / name

    def inference_npz(self, name: str) -> Path:
        """The ADM evaluator's .npz of those samples."""
        return self.inference / f"{name}.npz"

    def inference_name(self, ckpt_stem: str, settings: dict, overwrite: bool = False) -> str:
        """The name of the inference output of checkpoint `ckpt_stem` under `settings`
        (`image_settings`): the stem for the settings first sampled from it, else named by the
        differences (`speed.run.outputs.output_name`)."""
        return output_name(ckpt_stem, settings, self._inference_settings, overwrite)

    def _inference_settings(self, name: str) -> dict | None:
        return read_settings(self.inference_images(name)) or settings_in_npz(
            self.inference_npz(name)
        )

    def sample_grid(self, name: str, suffix: str = "") -> Path:
        """The `sample` phase's picture named `name` (`sample_name`; `suffix`: '-denoising')."""
        return self.sample / f"{name}{suffix}.png"

    def sample_record(self, name: str) -> Path:
        """The settings the grid `name` was drawn with (`grid_settings`), as JSON."""
        return self.sample / f"{name}.json"

    def sample_name(self, ckpt_stem: str, settings: dict, overwrite: bool = False) -> str:
        """The name of the grid of checkpoint `ckpt_stem` under `settings` (as `inference_name`)."""
        return output_name(
            ckpt_stem, settings, lambda name: read_json(self.sample_record(name)), overwrite
        )

    def onnx_file(self, ckpt_stem: str) -> Path:
        """The ONNX denoiser exported from checkpoint `ckpt_stem`."""
        return self.export / f"{ckpt_stem}.onnx"

    def onnx_manifest(self, ckpt_stem: str) -> Path:
        """The JSON beside it: schedule, parameterisation, shapes, guidance, settings."""
        return self.export / f"{ckpt_stem}.json"

    def curve_results(self, tag: str) -> Path:
        """step -> metrics of the FID curve `tag`."""
        return self.curve / f"{tag}.json"

    def curve_run(self, tag: str) -> RunDir:
        """The run folder the FID curve `tag` samples into (its own inference/)."""
        return RunDir(self.curve / tag)


# ---- checkpoints ----


def checkpoint_stem(step: int) -> str:
    return f"{step:0{CKPT_DIGITS}d}"


def checkpoint_name(step: int) -> str:
    return f"{checkpoint_stem(step)}.pt"


def checkpoint_step(path: str | os.PathLike) -> int:
    """The training step a checkpoint file is named after."""
    return int(Path(path).stem)


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


# ---- one run per folder ----


class RunLock:
    """Exclusive ownership of a run folder by one process: `<folder>/.lock`, created with
    O_EXCL and holding the owner's host and pid, deleted on release. A lock whose owner is a pid
    that no longer runs on this host (a killed run) is taken over with a warning; any other held
    lock is a RunLockedError (one line naming the holder)."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_FILE):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self._made: list[Path] = []  # folders the lock created, removed on release if still empty

    def try_acquire(self) -> bool:
        """Take the lock; False when another live process holds it."""
        self._made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self.holder()
                if self._live(holder):
                    return False
                warnings.warn(
                    f"taking over {self.path}: its holder (pid {holder.get('pid')}) no longer "
                    "runs on this host",
                    stacklevel=2,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            return True
        return False

    def acquire(self) -> RunLock:
        if not self.try_acquire():
            raise RunLockedError(self.refusal())
        return self

    def refusal(self) -> str:
        """The one-line message refusing a second run, naming the holder."""
        holder = self.holder()
        return (
            f"{self.folder} is in use by another run (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}); wait for it to finish, or delete {self.path} if that "
            "run is gone, or choose another experiment_dir"
        )

    def release(self) -> None:
        """Delete the lock file if this process still holds it (and the folders the lock made,
        when the run left them empty)."""
        if self.holder() == self.me:
            self.path.unlink(missing_ok=True)
        for folder in self._made:
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                folder.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def held_by_another(self) -> bool:
        """Whether another process holds the lock: one alive on this host, or any on another."""
        holder = self.holder()
        return self.path.exists() and holder != self.me and self._live(holder)

    def _live(self, holder: dict) -> bool:
        """Whether `holder` may still run: a process of another host (unknowable from here),
        or one alive on this host."""
        return holder.get("host") != self.me["host"] or _alive(holder.get("pid", -1))


@contextlib.contextmanager
def locked(folder: str | os.PathLike, enabled: bool = True) -> Iterator[RunLock | None]:
    """Hold `RunLock(folder)` for the block (released however it ends); `enabled=False` (ranks
    other than 0) holds nothing but learns whether rank 0 got it, so every rank raises the
    RunLockedError together instead of waiting for rank 0 at a barrier."""
    lock = RunLock(folder) if enabled else None
    refusal = None if lock is None or lock.try_acquire() else lock.refusal()
    refusals = [r for r in all_gather_objects(refusal) if r]
    if refusals:
        raise RunLockedError(refusals[0])
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- phases ----


def phase_state(phase: str, cfg: DictConfig) -> str:
    """DONE, RESUME (some output exists) or NEW for the run `cfg` describes in `phase`.

    Train is done when its checkpoint at `max_training_steps` exists (or the one at which it
    stopped on this `max_training_seconds`), resumable with any
    checkpoint. Inference is done when the `.npz` of the checkpoint it would sample records this
    config's provenance (`speed.run.outputs.npz_provenance`: checkpoint hash, num_samples,
    settings), resumable when its image folder records the same settings and holds PNGs (other
    settings sample again). Other phases always run. Inference raises MissingFileError when the
    run has no checkpoint to sample.
    """
    run = RunDir.of(cfg)
    if phase == "train":
        if run.checkpoint(cfg.max_training_steps).is_file():
            return DONE
        budget = cfg.get("max_training_seconds", 0)
        if budget and run.time_budget_step(budget):
            return DONE
        return RESUME if latest_checkpoint(run.checkpoints) is not None else NEW
    if phase == "inference":
        ckpt = sampling_checkpoint(cfg)
        settings = image_settings(cfg, ckpt)
        name = run.inference_name(ckpt.stem, settings, cfg.overwrite)
        if same_output(read_provenance(run.inference_npz(name)), npz_provenance(cfg, ckpt)):
            return DONE
        png_dir = run.inference_images(name)
        same = read_settings(png_dir) == settings
        return RESUME if same and any(png_dir.glob("*.png")) else NEW
    return NEW


# ---- the training state ----


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
