"""Checkpoint files: atomic writes, newest-first lookup and retention.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then renamed
over its final name, so a crash (or a kill mid-write) never leaves a truncated file where a good
one stood. Files are named by training step, `0005000.pt`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

CKPT_DIGITS = 7


def checkpoint_name(step: int) -> str:
    return f"{step:0{CKPT_DIGITS}d}.pt"


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save to `path` through a temp file + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Step-named checkpoints in `ckpt_dir`, oldest first (temp files are ignored)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob("*.pt") if p.stem.isdigit()]
    return sorted(found, key=lambda p: int(p.stem))


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep: int, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest `keep` checkpoints, sparing steps divisible by `keep_every`.

    `keep <= 0` keeps everything. Returns the deleted paths.
    """
    if keep <= 0:
        return []
    ckpts = list_checkpoints(ckpt_dir)
    deleted = []
    for path in ckpts[:-keep]:
        if keep_every > 0 and int(path.stem) % keep_every == 0:
            continue
        path.unlink()
        deleted.append(path)
    return deleted


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint onto the CPU (never onto the GPU it was saved from)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; check ckpt_path / resume")
    return torch.load(path, map_location="cpu", weights_only=False)
