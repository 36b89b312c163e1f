"""What one request to the page may ask for, and how long a connection may take: every bound
the server enforces, with its default and the command-line flag that changes it.

A request over a bound is refused before any work (4xx, one line naming the bound and its
flag), so a class list that implies 100,000 images never allocates them, and a connection that
stalls is closed after `timeout` seconds instead of holding a thread forever.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from speed.errors import ConfigError


def bound(default, meaning: str):
    """A field of `Limits`: its default and what it bounds (the help of its flag)."""
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class Limits:
    """The server's bounds. A request's images are sampled as one batch (twice as many rows with
    guidance), so `max_images` bounds the memory a request can take."""

    max_images: int = bound(256, "images per request: grid rows (classes) x columns (seeds)")
    max_seeds: int = bound(16, "grid columns (seeds) per request")
    max_steps: int = bound(1000, "sampling steps per request (also at most the diffusion's)")
    max_body: int = bound(64 * 1024, "bytes of a request body (settings are a few hundred)")
    timeout: float = bound(30.0, "seconds a connection may take to send its request")
    keep_jobs: int = bound(16, "finished generations kept downloadable (the oldest dropped)")

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if not value > 0:
                raise ConfigError(f"--{flag(item.name)} must be > 0, got {value}")


def flag(name: str) -> str:
    """The command-line flag of a `Limits` field, e.g. max_images -> max-images."""
    return name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--max-images`-style flag per field of `Limits`, defaulting to its default."""
    for item in fields(Limits):
        parser.add_argument(
            f"--{flag(item.name)}",
            dest=item.name,
            type=type(item.default),
            default=item.default,
            help=f"{item.metadata['help']} (default {item.default:g})",
        )


def from_arguments(args: argparse.Namespace) -> Limits:
    return Limits(**{item.name: getattr(args, item.name) for item in fields(Limits)})
