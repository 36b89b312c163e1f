"""What one request to the page may ask for, and how long a connection may take: every bound
the server enforces, with its default and the command-line flag that changes it.

A request over a bound is refused before any work (4xx, one line naming the bound and its
flag), so a class list that implies 100,000 images never allocates them, and a connection that
stalls is closed after `timeout` seconds instead of holding a thread forever.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from speed.utils import bounds
from speed.utils.bounds import bound


@dataclass(frozen=True)
class Limits:
    """The server's bounds. A request's images are sampled as one batch (twice as many rows with
    guidance), so `max_images` bounds the memory a request can take."""

    max_images: int = bound(256, "images per request: grid rows (classes, prompts) x seeds")
    max_seeds: int = bound(16, "grid columns (seeds) per request")
    max_steps: int = bound(1000, "sampling steps per request (also at most the diffusion's)")
    max_prompt_chars: int = bound(500, "characters per prompt (text-to-image models)")
    max_body: int = bound(64 * 1024, "bytes of a request body (settings are a few hundred)")
    timeout: float = bound(30.0, "seconds a connection may take to send its request")
    keep_jobs: int = bound(16, "finished generations kept downloadable (the oldest dropped)")

    def __post_init__(self):
        bounds.check_positive(self)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--max-images`-style flag per field of `Limits`, defaulting to its default."""
    bounds.add_arguments(parser, Limits)


def from_arguments(args: argparse.Namespace) -> Limits:
    return bounds.from_arguments(args, Limits)
