"""Two processes under torchrun (gloo on CPU) train together and stay in sync."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speed.utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
MAIN = str(Path(__file__).resolve().parents[2] / "main.py")


def test_torchrun_two_processes_train_in_sync(tmp_path, demo_config, tiny_overrides):
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", demo_config, "-p", "train", *tiny_overrides(run, steps=3),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    # every checkpoint save all-gathers a parameter checksum and fails if ranks differ
    state = load_checkpoint(run / "train/checkpoints/0000003.pt")
    assert len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
