"""A run's class names and their lookup: a request names a class by index (3, "3") or by name
in any case ("Zebra"); a typo is one line with the closest names."""

from __future__ import annotations

import difflib

from speed.errors import ConfigError

LISTED_NAMES = 20  # a typo lists every class name up to this many, else the closest ones


class ClassNames:
    """The names of a model's `len(names)` classes (none for an unconditional model);
    `where` says where the full list is published (e.g. "GET /api/options")."""

    def __init__(self, names: list[str], where: str):
        self.names, self.where = list(names), where
        self.index: dict[str, int] = {}  # lower-case name -> index (the first equal but for case)
        for i, name in enumerate(self.names):
            self.index.setdefault(name.lower(), i)

    def lookup(self, value, field: str = "classes") -> int:
        """The index of class `value`: an integer (or a string of digits) in range, or a name."""
        k = len(self.names)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{field} must be class indices or names, got {value!r}")
        if isinstance(value, int | float) or value.strip().lstrip("-").isdigit():
            number = float(value)
            if not number.is_integer():
                raise ConfigError(f"{field} must be class indices or names, got {value!r}")
            if not 0 <= number < max(k, 1) or k == 0:
                raise ConfigError(f"{field}: class {value!r} is outside 0..{k - 1}")
            return int(number)
        found = self.index.get(value.strip().lower())
        if found is not None:
            return found
        if not k:
            raise ConfigError(f"unknown class {value!r}: this run's model is unconditional")
        close = difflib.get_close_matches(value.lower(), list(self.index), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        listed = f"classes: {', '.join(self.names)}" if k <= LISTED_NAMES else f"{k} classes, "
        listed += "" if k <= LISTED_NAMES else f"listed by {self.where}"
        raise ConfigError(f"unknown class {value!r}; {hint}{listed} (or their indices 0..{k - 1})")
