"""Atomic writes leave files with the user's umask (as `open()` would), not mkstemp's 0600;
checkpoints, samples and logs of a run included."""

import contextlib
import os
import stat

import numpy as np
import pytest
import torch

from speed.config import load_config
from speed.runners.train import train
from speed.utils.atomic import atomic_path, atomic_write, current_umask


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_get_0666_minus_the_umask(tmp_path, mask, expected):
    with umask(mask):
        assert current_umask() == mask
        atomic_write(tmp_path / "a.txt", "text")
        atomic_write(tmp_path / "b.bin", b"bytes")
        atomic_write(tmp_path / "c.pt", {"w": torch.ones(2)})
        with atomic_path(tmp_path / "d.npz") as tmp:
            np.savez(open(tmp, "wb"), x=np.zeros(3))
    for name in ("a.txt", "b.bin", "c.pt", "d.npz"):
        assert mode(tmp_path / name) == expected, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_text("old")
    target.chmod(0o640)
    with umask(0o022):
        atomic_write(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640


def test_a_training_run_writes_readable_files(tmp_path, demo_config, tiny_overrides):
    overrides = tiny_overrides(tmp_path / "run", steps=2)
    with umask(0o022):
        train(load_config(demo_config, "train", overrides))
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.suffix == ".pt" for p in files) and any(p.suffix == ".png" for p in files)
    assert {str(p.relative_to(tmp_path)): mode(p) for p in files if mode(p) != 0o644} == {}
