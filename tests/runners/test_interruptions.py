"""Never lose work: preemption (SIGTERM) checkpoints and exits cleanly; NaN losses are skipped
and stop the run after `max_nonfinite` in a row."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speed.config import load_config
from speed.models import load_checkpoint
from speed.run import latest_checkpoint
from speed.runners.train import NonFiniteLossError, train
from speed.utils.logging import RunLogger

MAIN = str(Path(__file__).resolve().parents[2] / "main.py")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path, demo_config, tiny_overrides):
    run = tmp_path / "run"
    overrides = tiny_overrides(run, steps=100000) + ["ckpt_every=100000", "sample_every=0"]
    command = [sys.executable, MAIN, "-c", demo_config, "-p", "train", *overrides]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("[step 0000003]"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 0
    ckpt = latest_checkpoint(run / "train/checkpoints")
    stopped_at = load_checkpoint(ckpt)["step"]
    assert stopped_at >= 3 and int(ckpt.stem) == stopped_at

    resume = tiny_overrides(run, steps=stopped_at + 2) + ["resume=true", "sample_every=0"]
    final = train(load_config(demo_config, "train", resume))
    assert load_checkpoint(final)["step"] == stopped_at + 2


def test_nonfinite_losses_are_skipped_then_stop_the_run(
    tmp_path, demo_config, tiny_overrides, monkeypatch, nan_losses
):
    closed = []
    real_close = RunLogger.close
    monkeypatch.setattr(RunLogger, "close", lambda self: closed.append(real_close(self)))
    overrides = tiny_overrides(tmp_path / "run", steps=10) + ["max_nonfinite=3"]
    cfg = load_config(demo_config, "train", overrides)

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(NonFiniteLossError, match="NaN/inf for 3 steps in a row"):
            train(cfg)
        # the failed run gave back the signal handler it replaced and closed its logger
        assert signal.getsignal(signal.SIGTERM) is mine
        assert len(closed) == 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    # the skipped steps never touched the weights: the step-1 and step-2 checkpoints are equal
    ckpts = sorted((tmp_path / "run/train/checkpoints").glob("*.pt"))
    first, second = (load_checkpoint(p)["model"] for p in ckpts[:2])
    assert all(torch.equal(first[k], second[k]) for k in first)
