"""The page's HTTP endpoints (standard library `http.server`), one generation at a time on a
background thread:

    GET  /                          the page
    GET  /api/options               checkpoints, classes, samplers, the run's defaults (JSON)
    POST /api/generate              JSON settings -> {"job": id}; 400 bad setting, 409 busy
    GET  /api/jobs/<id>             {"state": running|done|error, "done", "total", "error"}
    GET  /api/jobs/<id>/<grid|strip>.png[?download=1]   the picture (as an attachment)
"""

from __future__ import annotations

import itertools
import json
import threading
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from speed.app.studio import RunStudio
from speed.errors import user_message

PICTURES = ("grid", "strip")


@dataclass
class Job:
    """One generation: its settings, progress and result (PNG bytes by picture name)."""

    id: str
    request: dict
    name: str  # of the downloads: <checkpoint>-<sampler><steps>-seed<seed>-<picture>.png
    state: str = "running"
    done: int = 0
    total: int = 0  # sampling steps: the grid's, then the strip's
    error: str | None = None
    pictures: dict = field(default_factory=dict)

    def status(self) -> dict:
        return {"state": self.state, "done": self.done, "total": self.total, "error": self.error}


class Jobs:
    """The jobs of a server; at most one running (sampling uses every core)."""

    def __init__(self, studio: RunStudio):
        self.studio = studio
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def start(self, request: dict) -> Job:
        """Check the settings (ConfigError), then sample on a thread; RuntimeError if busy."""
        cfg, _ = self.studio.prepare(request)
        name = f"{Path(cfg.ckpt_path).stem}-{cfg.sampler}{cfg.num_steps}-seed{cfg.seed}"
        with self.lock:
            if any(job.state == "running" for job in self.jobs.values()):
                raise RuntimeError("a generation is running; wait for it to finish")
            job = Job(str(next(self.ids)), dict(request), name, total=2 * cfg.num_steps)
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        try:
            job.pictures = self.studio.generate(job.request, progress)
            job.state = "done"
        except Exception as error:  # shown on the page; a bug also keeps its traceback here
            message = user_message(error)
            if message is None:
                traceback.print_exc()
            job.error, job.state = message or f"{type(error).__name__}: {error}", "error"


class Handler(BaseHTTPRequestHandler):
    jobs: Jobs  # set by `make_server`

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # quiet: the page polls several times a second

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: dict, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        if not parts:
            page = files("speed.app").joinpath("page.html").read_bytes()
            return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        if parts == ["api", "options"]:
            return self._json(self.jobs.studio.options())
        job = (
            self.jobs.jobs.get(parts[2])
            if parts[:2] == ["api", "jobs"] and len(parts) > 2
            else None
        )
        if job is not None and len(parts) == 3:
            return self._json(job.status())
        if job is not None and len(parts) == 4 and parts[3].removesuffix(".png") in job.pictures:
            picture = parts[3].removesuffix(".png")
            headers = {}
            if "download" in parse_qs(url.query):
                headers["Content-Disposition"] = f'attachment; filename="{job.name}-{picture}.png"'
            return self._send(HTTPStatus.OK, job.pictures[picture], "image/png", headers)
        self._json({"error": f"nothing at {url.path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/api/generate":
            return self._json({"error": f"nothing at {self.path}"}, HTTPStatus.NOT_FOUND)
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if not isinstance(request, dict):
                raise ValueError("the settings must be a JSON object")
            job = self.jobs.start(request)
        except RuntimeError as busy:
            return self._json({"error": str(busy)}, HTTPStatus.CONFLICT)
        except ValueError as error:  # bad JSON, or a ConfigError naming the setting
            return self._json({"error": str(error)}, HTTPStatus.BAD_REQUEST)
        self._json({"job": job.id})


def make_server(
    studio: RunStudio, host: str = "127.0.0.1", port: int = 7860
) -> ThreadingHTTPServer:
    """An HTTP server for `studio` (port 0: any free port; see `server.server_address`)."""
    handler = type("StudioHandler", (Handler,), {"jobs": Jobs(studio)})
    return ThreadingHTTPServer((host, port), handler)
