"""The service's Prometheus metrics (text format at GET /metrics), in a registry of its own so
several services in one process (the tests) keep apart.

    speed_serve_requests_total{endpoint, code}   answered requests
    speed_serve_request_seconds{endpoint}        latency histogram, arrival to answer
    speed_serve_queue_images                     images accepted and waiting for a batch
    speed_serve_batch_images                     histogram of images per sampled batch
    speed_serve_images_total                     images sampled (rate() of it: images/s)
    speed_serve_images_per_second                the last batch's images over its sampling time
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "speed_serve_requests", "Answered requests", ["endpoint", "code"], registry=r
        )
        self.latency = Histogram(
            "speed_serve_request_seconds",
            "Seconds from a request's arrival to its answer",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge("speed_serve_queue_images", "Images waiting for a batch", registry=r)
        self.batch = Histogram(
            "speed_serve_batch_images", "Images per batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.images = Counter("speed_serve_images", "Images sampled", registry=r)
        self.throughput = Gauge(
            "speed_serve_images_per_second", "Last batch: images / its sampling seconds", registry=r
        )

    def batch_done(self, images: int, seconds: float) -> None:
        self.batch.observe(images)
        self.images.inc(images)
        self.throughput.set(images / max(seconds, 1e-9))

    def text(self) -> bytes:
        return generate_latest(self.registry)
