"""Whether a phase of a run is done, resumable or new."""

from __future__ import annotations

from omegaconf import DictConfig

from speed.run.checkpoints import latest_checkpoint, sampling_checkpoint
from speed.run.folders import RunDir
from speed.run.outputs import (
    image_settings,
    npz_provenance,
    read_provenance,
    read_settings,
    same_output,
)

DONE, RESUME, NEW = "done", "resume", "new"


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
