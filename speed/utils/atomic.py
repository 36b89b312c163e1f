"""Atomic file writes: a crash or a kill mid-write never leaves a truncated file.

The data goes to a temporary file in the target's folder, named `.<name>.<random>.tmp`, which is
flushed and fsynced, then renamed over the target (a rename within one file system is atomic);
the folder is fsynced too, so the rename survives a power loss. On an error the temporary file is
deleted and the old target, if any, stays as it was. Readers see the old file or the new one.
The file gets the mode a plain `open()` would give it: the target's own mode when it exists, else
0666 minus the user's umask (0644 under the usual 022), not mkstemp's private 0600, so colleagues
can read checkpoints and samples on a shared machine as they can read everything else.
A full disk or quota (ENOSPC, EDQUOT) is a `DiskFullError` naming the file, a one-line user error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from speed.errors import DISK_FULL, PATH_ERRORS, DiskFullError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` for a writer that needs a path (np.savez into an
    open file, a memory map); once the block succeeds it is fsynced and renamed to `path`.

    An OSError on the way names `path`, not the temporary file: a full disk is a DiskFullError,
    the errors of `speed.errors.PATH_ERRORS` (permissions, a read-only file system, ...) keep
    their kind with `path` as their file name, so both print as one line. The file gets the
    mode `open(path, "w")` would give it (the existing file's, else 0o666 less the umask)."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            os.fchmod(fd, _mode_for(path))  # mkstemp makes it 0600
        finally:
            os.close(fd)
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        named = _naming(error, path)
        if named is error:
            raise
        raise named from error
    _fsync(path.parent, os.O_RDONLY)


def _naming(error: BaseException, path: Path) -> BaseException:
    """`error` as the user should read it: about `path`, not about its temporary file."""
    if not isinstance(error, OSError):
        return error
    if error.errno in DISK_FULL:
        return DiskFullError(
            f"disk full writing {path} ({error.strerror or error}); nothing was replaced, "
            "free space and run again"
        )
    temporary = str(path.parent / f".{path.name}.")  # the start of its temporary file's path
    if error.errno in PATH_ERRORS and str(error.filename or temporary).startswith(temporary):
        return type(error)(error.errno, error.strerror or os.strerror(error.errno), str(path))
    return error


def atomic_write(path: str | os.PathLike, data) -> Path:
    """Write `data` to `path` atomically: str as UTF-8 text, bytes as they are, anything else
    with torch.save (state dicts, checkpoints). Returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if isinstance(data, str):
            f.write(data.encode("utf-8"))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            f.write(data)
        else:
            torch_save(data, f)
    return path


def torch_save(obj, f) -> None:
    """torch.save into an open file, so a failed write (a full disk) is Python's OSError: torch
    raises a RuntimeError of its own while closing the archive, which hides the OSError."""
    try:
        torch.save(obj, f)
    except RuntimeError as error:
        if isinstance(error.__context__, OSError):
            raise error.__context__ from None
        raise


def _mode_for(path: Path) -> int:
    """The permission bits `open(path, "w")` leaves: the existing file's, else 0o666 & ~umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
