"""Dynamic batching: accepted jobs wait in a bounded queue; one worker takes the oldest, waits
`window` seconds from its arrival for others, and samples it with every waiting job of the same
key (sampler, steps, guidance, eta) that fits in `max_batch` images, as one batch on a thread
(the model runs one batch at a time; the event loop keeps answering meanwhile).

Closing stops new jobs (`Closed`) and lets the worker finish every job already accepted, so a
graceful shutdown answers what it took.
"""

from __future__ import annotations

import asyncio
import time
import traceback

import numpy as np

from speed.errors import user_message
from speed.serve.engine import Engine, Job
from speed.serve.metrics import Metrics


class QueueFull(Exception):
    """The queue holds `max_queue` images already (503 with Retry-After)."""


class Closed(Exception):
    """The service is shutting down and accepts no more jobs (503)."""


class Waiting:
    """A job in the queue: its arrival time and the future its answer goes to."""

    def __init__(self, job: Job, future: asyncio.Future):
        self.job, self.future, self.arrived = job, future, time.monotonic()


class Batcher:
    def __init__(
        self, engine: Engine, metrics: Metrics, max_queue: int, max_batch: int, window: float
    ):
        self.engine, self.metrics = engine, metrics
        self.max_queue, self.max_batch, self.window = max_queue, max_batch, window
        self.pending: list[Waiting] = []
        self.closing = False
        self.wakeup = asyncio.Event()
        self.worker: asyncio.Task | None = None

    def depth(self) -> int:
        """Images accepted and not yet sampling."""
        return sum(w.job.count for w in self.pending)

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._work())

    async def submit(self, job: Job) -> tuple[np.ndarray, int]:
        """(the job's images, uint8 [count, H, W, C], images of the batch it was sampled in);
        Closed or QueueFull at once when it cannot be accepted."""
        if self.closing:
            raise Closed("the service is shutting down")
        if self.depth() + job.count > self.max_queue:
            raise QueueFull(f"the queue holds {self.depth()} images (--max-queue {self.max_queue})")
        waiting = Waiting(job, asyncio.get_running_loop().create_future())
        self.pending.append(waiting)
        self.metrics.queue.set(self.depth())
        self.wakeup.set()
        return await waiting.future

    async def close(self) -> None:
        """Accept no more jobs; return once every accepted job has its answer."""
        self.closing = True
        self.wakeup.set()
        if self.worker is not None:
            await self.worker

    def take(self) -> list[Waiting]:
        """The oldest waiting job and the later ones of its key that fit in `max_batch` images
        (at least the oldest), removed from the queue; jobs whose client left are dropped."""
        self.pending = [w for w in self.pending if not w.future.done()]
        if not self.pending:
            return []
        key, images, batch = self.pending[0].job.key, 0, []
        for waiting in self.pending:
            fits = images + waiting.job.count <= self.max_batch or not batch
            if waiting.job.key == key and fits:
                batch.append(waiting)
                images += waiting.job.count
        self.pending = [w for w in self.pending if w not in batch]
        self.metrics.queue.set(self.depth())
        return batch

    async def _work(self) -> None:
        while True:
            if not self.pending:
                if self.closing:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            delay = self.pending[0].arrived + self.window - time.monotonic()
            if delay > 0 and not self.closing:
                await asyncio.sleep(delay)
            batch = self.take()
            if batch:
                await self._sample(batch)

    async def _sample(self, batch: list[Waiting]) -> None:
        jobs = [w.job for w in batch]
        images = sum(job.count for job in jobs)
        start = time.perf_counter()
        try:
            pictures = await asyncio.to_thread(self.engine.sample, jobs)
        except Exception as error:
            if user_message(error) is None:
                traceback.print_exc()
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        self.metrics.batch_done(images, time.perf_counter() - start)
        for waiting, result in zip(batch, pictures):
            if not waiting.future.done():
                waiting.future.set_result((result, images))
