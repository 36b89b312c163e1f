"""Forward hooks that exist for the duration of one controlled forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def hooked(*handles) -> Iterator[None]:
    """Remove the hook `handles` when the block ends, however it ends."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
