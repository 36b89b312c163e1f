"""A run's folders: where each phase of the run at `experiment_dir` writes, and how checkpoints
are named (by training step: `0005000.pt`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from speed.config_schema import root_defaults
from speed.errors import MissingFileError
from speed.run.outputs import output_name, read_json, read_settings, settings_in_npz
from speed.utils.bounded_yaml import load_yaml
from speed.utils.logging import METRICS_FILE

CKPT_DIGITS = 7
CONFIG_FILE = "config.yaml"
PHASE_FOLDERS = {
    "train": "train",
    "inference": "inference",
    "sample": "sample",
    "extract": "latents",
    "export": "export",
}


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


def checkpoint_stem(step: int) -> str:
    return f"{step:0{CKPT_DIGITS}d}"


def checkpoint_name(step: int) -> str:
    return f"{checkpoint_stem(step)}.pt"


def checkpoint_step(path: str | os.PathLike) -> int:
    """The training step a checkpoint file is named after."""
    return int(Path(path).stem)
