"""The HTTP API (FastAPI, served by uvicorn; docs/serve.md documents each endpoint):

    POST /generate   JSON settings -> the images: PNG (one image, or a row of them) or .npz
    GET  /options    classes (or prompts), samplers, bounds and the run's defaults (for clients
                     and the page)
    GET  /healthz    200 while the process answers (liveness)
    GET  /readyz     200 once the model is loaded, 503 while shutting down (readiness)
    GET  /metrics    Prometheus text format (`speed.serve.metrics`)

Every refusal is {"error": "<one line>"}: 422 for a body that is not the settings object, 400
for a setting the run cannot honour, 401 without the bearer token (when one is set), 503 with
Retry-After when the queue is full or the service is shutting down.
"""

from __future__ import annotations

import asyncio
import io
import math
import secrets
import time
from contextlib import asynccontextmanager
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from speed.errors import ConfigError, user_message
from speed.serve.batcher import Batcher, Closed, QueueFull
from speed.serve.engine import Engine, Job
from speed.serve.limits import ServeLimits
from speed.serve.metrics import Metrics
from speed.utils.images import make_grid, png_bytes

Classes = int | str | list[int | str] | None
Prompts = str | list[str] | None


class GenerateRequest(BaseModel):
    """The settings of POST /generate; those left out take the run's own (GET /options)."""

    model_config = ConfigDict(extra="forbid")

    classes: Classes = None  # one class (index or name) for all images, or one per image
    count: int = Field(1, ge=1)  # images
    seeds: int | list[int] = 0  # one seed per image, or one: image i uses seed + i
    sampler: str | None = None
    num_steps: int | None = None
    guidance_scale: float | None = None  # classifier-free guidance (1: none)
    eta: float | None = None
    prompt: Prompts = None  # a text-to-image model's: one prompt for all images, or one each
    format: Literal["png", "npz"] = "png"


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def first_problem(exc: RequestValidationError) -> str:
    """One line for a body that is not a settings object: the first problem, where it is."""
    problem = exc.errors()[0]
    where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
    detail = problem.get("msg", "invalid")
    if problem.get("type") == "extra_forbidden":
        detail = f"unknown setting; known: {', '.join(GenerateRequest.model_fields)}"
    return f"{where}: {detail}" if where else detail


def encode(images: np.ndarray, job: Job, fmt: str) -> tuple[bytes, str]:
    """A job's uint8 [N, H, W, C] images as PNG (a row of N) or as .npz (arr_0 the images and
    arr_1 the labels, the ADM evaluator's layout, or prompts, as `-p inference` stores them;
    and seeds)."""
    if fmt == "npz":
        buffer = io.BytesIO()
        arrays = {"arr_0": images, "seeds": np.asarray(job.seeds, dtype=np.int64)}
        if job.labels is not None:
            arrays["arr_1"] = np.asarray(job.labels, dtype=np.int64)
        if job.prompts is not None:
            arrays["prompts"] = np.asarray(job.prompts, dtype=np.str_)
        np.savez(buffer, **arrays)
        return buffer.getvalue(), "application/octet-stream"
    picture = images[0] if len(images) == 1 else make_grid(images, nrow=len(images))
    return png_bytes(picture), "image/png"


def create_app(engine: Engine, limits: ServeLimits, token: str | None = None) -> FastAPI:
    """The service over a loaded `engine`; with `token`, POST /generate and GET /options need
    `Authorization: Bearer <token>` (the probes and metrics stay open)."""
    metrics = Metrics()
    batcher = Batcher(engine, metrics, limits.max_queue, limits.max_batch, limits.batch_window)
    busy = {"Retry-After": str(limits.retry_after)}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.close()  # graceful: every accepted request gets its images

    app = FastAPI(title="speed serve", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.engine = batcher, metrics, engine

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error(422, first_problem(exc))

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        path = request.url.path
        if token is not None and path in ("/generate", "/options"):
            sent = request.headers.get("authorization", "")
            if not secrets.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                response = error(
                    401, "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
                )
                metrics.requests.labels(path, "401").inc()
                return response
        try:
            response = await call_next(request)
        except asyncio.CancelledError:  # a shutdown whose --graceful-timeout ran out first
            response = error(503, "the service shut down before this request was done", busy)
        if path in ("/generate", "/options"):
            metrics.requests.labels(path, str(response.status_code)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    @app.post("/generate")
    async def generate(settings: GenerateRequest):
        if settings.count > limits.max_images:
            return error(
                400,
                f"count must lie in 1..{limits.max_images} on this server (--max-images)",
            )
        if settings.guidance_scale is not None and not math.isfinite(settings.guidance_scale):
            return error(400, "guidance_scale must be a finite number")
        fields = settings.model_dump(exclude={"format"})
        try:
            job = engine.job(**fields)
        except ConfigError as refusal:
            return error(400, str(refusal))
        try:
            images, batch = await batcher.submit(job)
        except QueueFull as full:
            return error(503, f"{full}; retry later", busy)
        except Closed as closed:
            return error(503, str(closed), busy)
        except Exception as failure:
            message = user_message(failure)
            return error(500, message or f"{type(failure).__name__}: {failure}")
        body, media = encode(images, job, settings.format)
        headers = {"X-Batch-Images": str(batch), "X-Seeds": ",".join(map(str, job.seeds))}
        return Response(body, media_type=media, headers=headers)

    @app.get("/options")
    async def options():
        return {**engine.options(), "max_images": limits.max_images}

    @app.get("/healthz")
    async def healthz():
        return {"alive": True}

    @app.get("/readyz")
    async def readyz():
        if batcher.closing:
            return error(503, "shutting down", busy)
        return {"ready": True, "checkpoint": engine.checkpoint, "backend": engine.backend}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    return app
