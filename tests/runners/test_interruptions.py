"""Never lose work: preemption (SIGTERM) and Ctrl-C (SIGINT) checkpoint, say where and how to
resume, and exit with 128 + the signal; a resumed run says what it loaded, a finished one that
there is nothing to do; NaN losses are skipped and stop the run after `max_nonfinite` in a row."""

import shlex
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
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("[step 0000003]"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM  # 143: "ended by SIGTERM"
    ckpt = latest_checkpoint(run / "train/checkpoints")
    stopped_at = load_checkpoint(ckpt)["step"]
    assert stopped_at >= 3 and int(ckpt.stem) == stopped_at
    said = [line for line in proc.stderr.read().splitlines() if line.startswith("interrupted")]
    resume_words = shlex.join(["main.py", "-c", demo_config, "-p", "train", *overrides])
    assert said == [
        f"interrupted (SIGTERM) at step {stopped_at}: saved {ckpt}; "
        f"resume with: python {resume_words} resume=true"
    ]

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


def test_ctrl_c_says_where_and_how_to_resume_and_resuming_says_what_it_loaded(
    main, tmp_path, demo_config, tiny_overrides, monkeypatch, capsys
):
    import os

    from speed.runners import train as train_module

    run = tmp_path / "run"
    overrides = [*tiny_overrides(run, steps=6), "ckpt_every=100", "sample_every=0"]
    real_step, calls = train_module._optimizer_step, []

    def step_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C during step 2: step 3 is the last one
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args)

    monkeypatch.setattr(train_module, "_optimizer_step", step_then_ctrl_c)
    assert main(["-c", demo_config, "-p", "train", *overrides, "overwrite=true"]) == 130
    ckpt = run / "train/checkpoints/0000003.pt"
    assert [p.name for p in ckpt.parent.glob("*.pt")] == ["0000003.pt"]
    (line,) = capsys.readouterr().err.strip().splitlines()
    resume = shlex.join(["main.py", "-c", demo_config, "-p", "train", *overrides, "resume=true"])
    assert line == f"interrupted (SIGINT) at step 3: saved {ckpt}; resume with: python {resume}"

    monkeypatch.setattr(train_module, "_optimizer_step", real_step)
    words = shlex.split(line.split("resume with: ", 1)[1])[2:]  # after "python main.py"
    assert main(words) == 0
    out = capsys.readouterr().out
    assert f"train: resuming from {ckpt} at step 3 of 6\n" in out
    final = run / "train/checkpoints/0000006.pt"
    assert load_checkpoint(final)["step"] == 6

    before = {p: p.stat().st_mtime_ns for p in (run / "train").rglob("*") if p.is_file()}
    assert main(words) == 0
    assert capsys.readouterr().out == (
        f"train: nothing to do: {final} is at step 6, max_training_steps=6; raise it to train "
        "further\n"
    )
    after = {p: p.stat().st_mtime_ns for p in (run / "train").rglob("*") if p.is_file()}
    assert after == before  # nothing written
