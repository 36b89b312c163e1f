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
from speed.run.nonfinite import NonFiniteLossError
from speed.runners.train import train
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


@pytest.fixture
def poisoned_step(monkeypatch):
    """fn(steps): the optimizer steps (counted from 1) after which the model's weights are NaN,
    as an overflowing update would leave them (the loss before it was finite)."""
    from speed.runners import train as train_module

    real = train_module._optimizer_step
    calls = []

    def poison_at(steps):
        def step(state, grad_clip):
            norm = real(state, grad_clip)
            calls.append(1)
            if len(calls) in steps:
                with torch.no_grad():
                    next(state.model.parameters()).fill_(float("nan"))
            return norm

        monkeypatch.setattr(train_module, "_optimizer_step", step)

    return poison_at


def _all_finite(ckpt_dir: Path) -> list[int]:
    """The steps of the checkpoints in `ckpt_dir`, each loaded (checksum and finiteness checked)."""
    return [load_checkpoint(p)["step"] for p in sorted(ckpt_dir.glob("*.pt"))]


def test_a_nonfinite_state_is_never_checkpointed_and_stops_the_run(
    tmp_path, demo_config, tiny_overrides, poisoned_step, capsys
):
    poisoned_step({2})
    cfg = load_config(demo_config, "train", tiny_overrides(tmp_path / "run", steps=4))
    with pytest.raises(NonFiniteLossError, match=r"NaN/inf in model\..* at step 2; lower the lr"):
        train(cfg)
    assert "step 2: checkpoint not written: NaN/inf in model." in capsys.readouterr().out
    assert _all_finite(tmp_path / "run/train/checkpoints") == [1]


def test_rollback_returns_to_the_last_good_checkpoint_and_skips_the_data(
    tmp_path, demo_config, tiny_overrides, poisoned_step, capsys
):
    poisoned_step({2})
    overrides = tiny_overrides(tmp_path / "run", steps=4) + ["on_nonfinite=rollback"]
    last = train(load_config(demo_config, "train", overrides))
    out = capsys.readouterr().out
    assert "step 2: checkpoint not written" in out
    assert "rolled back to 0000001.pt (step 1), skipping the data since" in out
    assert _all_finite(tmp_path / "run/train/checkpoints") == [1, 2, 3, 4]
    straight = train(load_config(demo_config, "train", tiny_overrides(tmp_path / "b", steps=4)))
    # one micro-batch more was consumed: the poisoned step's batch is not seen again
    rolled, plain = load_checkpoint(last), load_checkpoint(straight)
    assert rolled["batches_in_epoch"] == plain["batches_in_epoch"] + 1 or (
        rolled["epoch"] == plain["epoch"] + 1 and rolled["batches_in_epoch"] == 0
    )


def test_rollback_stops_when_no_finite_step_follows(
    tmp_path, demo_config, tiny_overrides, nan_losses, capsys
):
    overrides = tiny_overrides(tmp_path / "run", steps=10)
    cfg = load_config(
        demo_config, "train", overrides + ["max_nonfinite=2", "on_nonfinite=rollback"]
    )
    with pytest.raises(NonFiniteLossError, match="no finite step since rolling back to 0000001.pt"):
        train(cfg)
    assert "rolled back to 0000001.pt" in capsys.readouterr().out


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
