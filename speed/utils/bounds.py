"""A server's bounds as a frozen dataclass whose fields become command-line flags: each field
carries its default and what it bounds (`bound`), `add_arguments` makes one `--max-images`-style
flag per field, and `check_positive` refuses a bound that is not > 0 in one line naming its flag.
Used by the sampling page (`speed.app.limits`) and the service (`speed.serve.limits`)."""

from __future__ import annotations

import argparse
from dataclasses import field, fields

from speed.errors import ConfigError


def bound(default, meaning: str):
    """A field of a bounds dataclass: its default and what it bounds (the help of its flag)."""
    return field(default=default, metadata={"help": meaning})


def flag(name: str) -> str:
    """The command-line flag of a field, e.g. max_images -> max-images."""
    return name.replace("_", "-")


def check_positive(bounds) -> None:
    """ConfigError naming the flag of the first field of `bounds` that is not > 0."""
    for item in fields(bounds):
        value = getattr(bounds, item.name)
        if not value > 0:
            raise ConfigError(f"--{flag(item.name)} must be > 0, got {value}")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass `cls`, defaulting to the field's default."""
    for item in fields(cls):
        parser.add_argument(
            f"--{flag(item.name)}",
            dest=item.name,
            type=type(item.default),
            default=item.default,
            help=f"{item.metadata['help']} (default {item.default:g})",
        )


def from_arguments(args: argparse.Namespace, cls: type):
    """The `cls` the parsed flags of `add_arguments` describe (checked by its __post_init__)."""
    return cls(**{item.name: getattr(args, item.name) for item in fields(cls)})
