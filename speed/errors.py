"""The errors a user can fix (a config value, a path, a missing file, a broken file, a full disk):
`main.py` and the evaluation CLIs print them as one line. Every other exception is a bug and keeps
its traceback.

`ConfigError` and `DataError` are also ValueErrors and `MissingFileError` a FileNotFoundError, so
code that catches the built-in kinds keeps working. `user_message` is the one test of what counts
as a user's mistake.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """A mistake the user can fix; the message is one line that says what to change."""


class ConfigError(UserError, ValueError):
    """A mistake in a config file or on the command line (the message is one line)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a run should hold) is not there."""


class DataError(UserError, ValueError):
    """A file's contents cannot be used: a corrupt, truncated or empty checkpoint, a text file
    named .npz, a dataset with no usable item, non-finite weights or images."""


class RunLockedError(UserError):
    """Another live process owns the run folder (see `speed.run.RunLock`)."""


class DiskFullError(UserError, OSError):
    """A write failed because the disk (or quota) is full; the message names the file."""


# OSErrors about a path the user chose (its place, kind, permissions or file system), each with
# what to do; with a file name they are the user's to fix, not bugs.
PATH_ERRORS = {
    errno.ENOENT: "check the path",
    errno.EISDIR: "a file was expected there, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "that file system is read-only: choose another path",
    errno.ENAMETOOLONG: "shorten the path",
    errno.ELOOP: "the path has a loop of symbolic links",
}


class Interrupted(Exception):
    """Training stopped on SIGTERM or SIGINT (preemption, Ctrl-C) after writing `checkpoint` at
    `step`: not a failure, the run resumes from there. `main.py` prints one line with the
    checkpoint and the resume command and exits with 128 + `signum` (143 for SIGTERM, 130 for
    SIGINT), the code a shell and a scheduler read as "ended by that signal"."""

    def __init__(self, checkpoint, step: int, signum: int):
        super().__init__(f"interrupted at step {step}: checkpoint {checkpoint}")
        self.checkpoint, self.step, self.signum = checkpoint, step, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def user_message(error: BaseException) -> str | None:
    """The one-line message of a mistake the user can fix, None for a bug (keep its traceback).

    User mistakes: every UserError; a full disk or quota (ENOSPC/EDQUOT) anywhere; an OSError of
    `PATH_ERRORS` (missing, a folder, not permitted, read-only, ...) that names its file.
    """
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        where = f" writing {error.filename}" if error.filename else ""
        return f"disk full{where} ({error.strerror or error}); free space and run again"
    if isinstance(error, OSError) and error.errno in PATH_ERRORS and error.filename:
        other = f" -> {error.filename2}" if error.filename2 else ""
        return f"{error.strerror}: {error.filename}{other} ({PATH_ERRORS[error.errno]})"
    return None


def report_user_error(error: Exception) -> int:
    """For an `except` block of a command line: print a user mistake's one `error: ...` line and
    return the exit code 2; re-raise a bug, and any error under SPEED_DEBUG=1, with its
    traceback."""
    message = user_message(error)
    if message is None or os.environ.get("SPEED_DEBUG"):
        raise error
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_cli(main: Callable[[], int]) -> int:
    """Call a command line's `main`; a user error (`user_message`: a bad path, a bad file, too
    few images, a full disk) prints one `error: ...` line and returns 2. Any other exception is a
    bug and keeps its traceback; SPEED_DEBUG=1 shows the traceback of user errors too."""
    try:
        return main()
    except Exception as error:
        return report_user_error(error)
