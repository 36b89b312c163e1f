"""The queue: keys grouped, a full queue refused at once, and a close that answers every job
already accepted (a graceful shutdown)."""

import asyncio
import threading

import numpy as np
import pytest

from speed.serve.batcher import Batcher, Closed, QueueFull
from speed.serve.engine import Job
from speed.serve.metrics import Metrics


class GatedEngine:
    """Samples zeros, and only once `gate` is set; records the batches it got."""

    def __init__(self):
        self.gate, self.batches = threading.Event(), []

    def sample(self, jobs):
        self.gate.wait(timeout=30)
        self.batches.append([job.seeds for job in jobs])
        return [np.full((job.count, 2, 2, 1), job.seeds[0], np.uint8) for job in jobs]


def job(seed, count=1, sampler="ddim"):
    return Job(None, tuple(range(seed, seed + count)), sampler, 2, 1.0, 0.0)


def test_full_queue_then_close_answers_every_accepted_job():
    async def scenario():
        engine = GatedEngine()
        batcher = Batcher(engine, Metrics(), max_queue=3, max_batch=2, window=0.01)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(job(1)))
        await asyncio.sleep(0.1)  # the worker took it and waits at the gate
        queued = [asyncio.ensure_future(batcher.submit(job(s))) for s in (2, 3)]
        other = asyncio.ensure_future(batcher.submit(job(4, sampler="ddpm")))
        await asyncio.sleep(0.01)
        assert batcher.depth() == 3
        with pytest.raises(QueueFull, match="the queue holds 3 images"):
            await batcher.submit(job(5))
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        with pytest.raises(Closed):
            await batcher.submit(job(6))
        engine.gate.set()
        await closing
        answers = [await f for f in (first, *queued, other)]
        return engine.batches, answers

    batches, answers = asyncio.run(scenario())
    assert batches == [[(1,)], [(2,), (3,)], [(4,)]]  # ddim jobs together, ddpm apart
    assert [int(images[0, 0, 0, 0]) for images, _ in answers] == [1, 2, 3, 4]
    assert [size for _, size in answers] == [1, 2, 2, 1]


def test_a_batch_keeps_within_max_batch_images():
    batcher = Batcher(GatedEngine(), Metrics(), max_queue=10, max_batch=3, window=0.01)

    async def take():
        loop = asyncio.get_running_loop()
        for j in (job(1, 2), job(3, 2), job(5, 1)):
            batcher.pending.append(type("W", (), {"job": j, "future": loop.create_future()})())
        return [w.job.seeds for w in batcher.take()], [w.job.seeds for w in batcher.take()]

    assert asyncio.run(take()) == ([(1, 2), (5,)], [(3, 4)])
