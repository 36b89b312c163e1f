"""Run the project's phases as a user does (`python main.py -c CONFIG -p PHASE ...`) from a
benchmark script, so a benchmark measures the shipped path and resumes where it stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from speed.run import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]


def main_py(config: str, phase: str, *overrides: str) -> None:
    command = [sys.executable, str(REPO / "main.py"), "-c", config, "-p", phase, *overrides]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def train(config: str, run: Path, *overrides: str) -> Path:
    """Train (or resume, or find finished) the run in `run`; its last checkpoint."""
    common = [f"experiment_dir={run}", "wandb=disabled", "tensorboard=false"]
    main_py(config, "train", *common, *overrides, "resume=true")
    return latest_checkpoint(run / "train/checkpoints")
