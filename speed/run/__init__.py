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

Modules: `folders` (RunDir, checkpoint names), `checkpoints` (listing, resuming, sampling's),
`lock`, `phases` (done / resume / new), `state` (TrainState); beside them `outputs` (names and
provenance of sampled outputs), `identity` (what a resume may change), `nonfinite` and `sharded`.
Their common names are importable from `speed.run`.
"""

from speed.run.checkpoints import (
    claim_train_dir,
    latest_checkpoint,
    list_checkpoints,
    load_newest_good,
    prune_checkpoints,
    resume_candidates,
    resume_checkpoint,
    sampling_checkpoint,
)
from speed.run.folders import RunDir, checkpoint_name, checkpoint_stem, checkpoint_step
from speed.run.lock import RunLock, locked
from speed.run.phases import DONE, NEW, RESUME, phase_state
from speed.run.state import TrainState

__all__ = [
    "DONE",
    "NEW",
    "RESUME",
    "RunDir",
    "RunLock",
    "TrainState",
    "checkpoint_name",
    "checkpoint_stem",
    "checkpoint_step",
    "claim_train_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_newest_good",
    "locked",
    "phase_state",
    "prune_checkpoints",
    "resume_candidates",
    "resume_checkpoint",
    "sampling_checkpoint",
]
