"""Two processes under torchrun (gloo on CPU) train together, in sync, and compute the same
update as one process with the same global batch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speed.config import load_config
from speed.models import load_checkpoint
from speed.runners.train import train

pytestmark = pytest.mark.slow
MAIN = str(Path(__file__).resolve().parents[2] / "main.py")


def test_torchrun_two_processes_equal_one_with_the_same_global_batch(
    tmp_path, dit_config, tiny_overrides, tiny_dit
):
    # The tiny DiT: in the demo's UNet the first steps' gradients behind its zero-initialised
    # output conv are ~1e-9, where AdamW's m / sqrt(v) turns summation-order rounding into 1e-5.
    common = [*tiny_dit, "data.random_flip=false", "sample_every=0"]
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", dit_config, "-p", "train", *tiny_overrides(run, steps=3), *common,
        "data.batch_size=2",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    # every checkpoint save all-gathers a parameter checksum and fails if ranks differ
    state = load_checkpoint(run / "train/checkpoints/0000003.pt")
    assert len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])

    single = tiny_overrides(tmp_path / "single", steps=3) + common  # batch 4 in one process
    reference = load_checkpoint(train(load_config(dit_config, "train", single)))
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(state["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


def test_a_locked_run_stops_every_rank_in_one_line(tmp_path, dit_config, tiny_overrides, tiny_dit):
    """Rank 0 finds the train folder held by another run: every rank stops (none waits for rank 0
    at a barrier) and the refusal is one line per rank that got to print it (torchrun may end
    the other rank first)."""
    from speed.run import RunLock

    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", dit_config, "-p", "train", *tiny_overrides(run), *tiny_dit,
    ]  # fmt: skip
    with RunLock(run / "train"):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0  # torchrun adds its own report of the failed ranks
    refusals = [line for line in result.stderr.splitlines() if "in use by another run" in line]
    assert 1 <= len(refusals) <= 2 and all(line.startswith("error: ") for line in refusals)
    assert "RunLockedError" not in result.stderr
    assert not (run / "train/checkpoints").exists()
