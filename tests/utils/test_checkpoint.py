"""Checkpoint files: atomic replacement, newest lookup, retention."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from speed.utils import checkpoint as ckpt_io


def test_atomic_save_replaces_whole_file(tmp_path):
    path = tmp_path / "0000010.pt"
    ckpt_io.atomic_torch_save({"step": 1}, path)
    ckpt_io.atomic_torch_save({"step": 2}, path)
    assert ckpt_io.load_checkpoint(path) == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000010.pt"]


def test_failed_write_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "0000010.pt"
    ckpt_io.atomic_torch_save({"w": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt_io.atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt_io.load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["0000010.pt"]


def test_process_killed_mid_write_never_leaves_a_broken_checkpoint(tmp_path):
    path = tmp_path / "0000010.pt"
    ckpt_io.atomic_torch_save({"w": torch.ones(3)}, path)
    script = (
        "import torch, sys\n"
        "from speed.utils.checkpoint import atomic_torch_save\n"
        "atomic_torch_save({'w': torch.zeros(60_000_000)}, sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=os.getcwd())
    deadline = time.time() + 60
    while not list(tmp_path.glob(".*.tmp")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = ckpt_io.load_checkpoint(path)  # old or new, never truncated
    assert state["w"].numel() in (3, 60_000_000)
    assert ckpt_io.latest_checkpoint(tmp_path) == path


def test_latest_and_prune(tmp_path):
    for step in (100, 200, 300, 400, 500):
        ckpt_io.atomic_torch_save({"step": step}, tmp_path / ckpt_io.checkpoint_name(step))
    (tmp_path / ".0000600.pt.abc.tmp").write_bytes(b"partial")
    assert ckpt_io.latest_checkpoint(tmp_path).name == "0000500.pt"
    deleted = ckpt_io.prune_checkpoints(tmp_path, keep=2, keep_every=200)
    assert sorted(p.name for p in deleted) == ["0000100.pt", "0000300.pt"]
    kept = [p.name for p in ckpt_io.list_checkpoints(tmp_path)]
    assert kept == ["0000200.pt", "0000400.pt", "0000500.pt"]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        ckpt_io.load_checkpoint(tmp_path / "nope.pt")
