"""One run per folder: `RunLock`, a `.lock` file holding the owner's host and pid."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from speed.errors import RunLockedError
from speed.utils.distributed import all_gather_objects

LOCK_FILE = ".lock"


class RunLock:
    """Exclusive ownership of a run folder by one process: `<folder>/.lock`, created with
    O_EXCL and holding the owner's host and pid, deleted on release. A lock whose owner is a pid
    that no longer runs on this host (a killed run) is taken over with a warning; any other held
    lock is a RunLockedError (one line naming the holder)."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_FILE):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self._made: list[Path] = []  # folders the lock created, removed on release if still empty

    def try_acquire(self) -> bool:
        """Take the lock; False when another live process holds it."""
        self._made = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self.holder()
                if self._live(holder):
                    return False
                warnings.warn(
                    f"taking over {self.path}: its holder (pid {holder.get('pid')}) no longer "
                    "runs on this host",
                    stacklevel=2,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            return True
        return False

    def acquire(self) -> RunLock:
        if not self.try_acquire():
            raise RunLockedError(self.refusal())
        return self

    def refusal(self) -> str:
        """The one-line message refusing a second run, naming the holder."""
        holder = self.holder()
        return (
            f"{self.folder} is in use by another run (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}); wait for it to finish, or delete {self.path} if that "
            "run is gone, or choose another experiment_dir"
        )

    def release(self) -> None:
        """Delete the lock file if this process still holds it (and the folders the lock made,
        when the run left them empty)."""
        if self.holder() == self.me:
            self.path.unlink(missing_ok=True)
        for folder in self._made:
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                folder.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def held_by_another(self) -> bool:
        """Whether another process holds the lock: one alive on this host, or any on another."""
        holder = self.holder()
        return self.path.exists() and holder != self.me and self._live(holder)

    def _live(self, holder: dict) -> bool:
        """Whether `holder` may still run: a process of another host (unknowable from here),
        or one alive on this host."""
        return holder.get("host") != self.me["host"] or _alive(holder.get("pid", -1))


@contextlib.contextmanager
def locked(folder: str | os.PathLike, enabled: bool = True) -> Iterator[RunLock | None]:
    """Hold `RunLock(folder)` for the block (released however it ends); `enabled=False` (ranks
    other than 0) holds nothing but learns whether rank 0 got it, so every rank raises the
    RunLockedError together instead of waiting for rank 0 at a barrier."""
    lock = RunLock(folder) if enabled else None
    refusal = None if lock is None or lock.try_acquire() else lock.refusal()
    refusals = [r for r in all_gather_objects(refusal) if r]
    if refusals:
        raise RunLockedError(refusals[0])
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
