"""The errors a user can fix (a config value, a path, a missing file): `main.py` prints them as
one line. Every other exception is a bug and keeps its traceback.

`ConfigError` is also a ValueError and `MissingFileError` a FileNotFoundError, so code that
catches the built-in kinds keeps working.
"""


class UserError(Exception):
    """A mistake the user can fix; the message is one line that says what to change."""


class ConfigError(UserError, ValueError):
    """A mistake in a config file or on the command line (the message is one line)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a run should hold) is not there."""
