"""What one request may ask for and how much the service queues: every bound, its default and
its command-line flag (`speed.utils.bounds`). A request over a bound is refused before any work:
4xx for a request too large, 503 with Retry-After when the queue is full."""

from __future__ import annotations

from dataclasses import dataclass

from speed.errors import ConfigError
from speed.utils.bounds import bound, check_positive


@dataclass(frozen=True)
class ServeLimits:
    max_images: int = bound(16, "images per request (count)")
    max_steps: int = bound(1000, "sampling steps per request (also at most the diffusion's)")
    max_prompt_chars: int = bound(500, "characters per prompt (text-to-image models)")
    max_queue: int = bound(64, "images accepted but not yet sampling; beyond it a 503")
    max_batch: int = bound(16, "images sampled as one batch (1: no batching)")
    batch_window: float = bound(0.01, "seconds a batch waits for more requests after its first")
    retry_after: int = bound(1, "seconds a 503's Retry-After asks a client to wait")
    rows: int = bound(8, "rows of every denoiser call (fixed, so batching never changes pixels)")

    def __post_init__(self):
        check_positive(self)
        if self.max_images > self.max_queue:
            raise ConfigError(
                f"--max-images {self.max_images} is over --max-queue {self.max_queue}: a request "
                "that large could never be queued"
            )
