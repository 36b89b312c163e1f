"""The page's HTTP endpoints (standard library `http.server`), one generation at a time on a
background thread (docs/app.md documents each with examples):

    GET  /                          the page
    GET  /api/options               checkpoints, classes, samplers, limits, the run's defaults
    POST /api/generate              JSON settings -> {"job": id}; 400 bad setting, 409 busy
    GET  /api/jobs/<id>             {"state": running|done|error|cancelled, "done", "total",
                                    "error"}
    POST /api/jobs/<id>/cancel      stop the job between two sampling steps (202, its status)
    GET  /api/jobs/<id>/<grid|strip>.png[?download=1]   the picture (as an attachment)

Every answer but the page and the pictures is JSON; an error is {"error": "<one line>"} with a
4xx status (a 500 for a bug in this code, whose traceback is printed). Nothing waits without
bound (`speed.app.limits.Limits`): a connection silent for `timeout` seconds gets a 408 (or is
closed, when its request line is unfinished), a body needs a Content-Length of at most
`max_body` bytes (411, 413), and malformed request lines and headers get a 4xx from
`http.server`'s own parser, answered as JSON here.
"""

from __future__ import annotations

import itertools
import json
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from speed.app.limits import Limits
from speed.app.studio import RunStudio
from speed.errors import ConfigError, user_message

PICTURES = ("grid", "strip")


class Busy(RuntimeError):
    """A generation is already running (409)."""


class Cancelled(Exception):
    """Raised by a job's progress callback once it is cancelled: sampling stops there."""


class Refused(Exception):
    """A request answered with `status` and the one-line `message` (raised while reading it)."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One generation: its settings, progress and result (PNG bytes by picture name)."""

    id: str
    request: dict
    name: str  # of the downloads: <checkpoint>-<sampler><steps>-seed<seed>-<picture>.png
    state: str = "running"  # then done, error or cancelled
    done: int = 0
    total: int = 0  # sampling steps: the grid's, then the strip's
    error: str | None = None
    pictures: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict:
        return {"state": self.state, "done": self.done, "total": self.total, "error": self.error}


class Jobs:
    """The jobs of a server; at most one running (sampling uses every core), and the newest
    `keep` finished ones (older ones are forgotten with their pictures)."""

    def __init__(self, studio: RunStudio, keep: int = 16):
        self.studio, self.keep = studio, keep
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def start(self, request: dict) -> Job:
        """Check the settings (ConfigError), then sample on a thread; Busy if one is running."""
        cfg, _ = self.studio.prepare(request)
        name = f"{Path(cfg.ckpt_path).stem}-{cfg.sampler}{cfg.num_steps}-seed{cfg.seed}"
        with self.lock:
            if any(job.state == "running" for job in self.jobs.values()):
                raise Busy("a generation is running; wait for it to finish or cancel it")
            finished = [key for key, job in self.jobs.items() if job.state != "running"]
            for key in finished[: max(0, len(finished) - self.keep + 1)]:  # oldest first
                del self.jobs[key]
            job = Job(str(next(self.ids)), dict(request), name, total=2 * cfg.num_steps)
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Ask job `job_id` to stop after its current sampling step; the job, None if unknown.
        A job that has already ended keeps its state."""
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancel.set()
        return job

    def _run(self, job: Job) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            if job.cancel.is_set():
                raise Cancelled

        try:
            job.pictures = self.studio.generate(job.request, progress)
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except Exception as error:  # shown on the page; a bug also keeps its traceback here
            message = user_message(error)
            if message is None:
                traceback.print_exc()
            job.error, job.state = message or f"{type(error).__name__}: {error}", "error"


class Handler(BaseHTTPRequestHandler):
    jobs: Jobs  # set by `make_server`, with `limits` and `timeout` (the socket's, in seconds)
    limits: Limits
    default_request_version = "HTTP/1.0"  # answer a garbled request line with a status line too

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
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: dict, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        """An error found by `http.server` itself (a malformed request line or header, a line
        too long, an unknown method), or a refusal of ours: JSON, and the connection closed."""
        self.close_connection = True
        try:
            self._json({"error": message or HTTPStatus(code).phrase}, code)
        except OSError:  # the client has gone
            pass

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        except TimeoutError:  # headers begun but never finished (e.g. a slowloris client)
            self.send_error(
                HTTPStatus.REQUEST_TIMEOUT, f"the headers did not arrive within {self.timeout:g} s"
            )
            return False

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, method: Callable[[], None]) -> None:
        """Run `method`; a refusal is its 4xx, a bug a 500 with the traceback printed."""
        try:
            method()
        except Refused as refusal:
            self.send_error(refusal.status, str(refusal))
        except ConnectionError:  # the client went away mid-answer
            self.close_connection = True
        except Exception as error:
            traceback.print_exc()
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")

    def _get(self) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        if not parts:
            page = files("speed.app").joinpath("page.html").read_bytes()
            return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        if parts == ["api", "options"]:
            return self._json(self.jobs.studio.options())
        job = self._job(parts)
        if job is not None and len(parts) == 3:
            return self._json(job.status())
        if job is not None and len(parts) == 4 and parts[3].removesuffix(".png") in job.pictures:
            picture = parts[3].removesuffix(".png")
            headers = {}
            if "download" in parse_qs(url.query):
                headers["Content-Disposition"] = f'attachment; filename="{job.name}-{picture}.png"'
            return self._send(HTTPStatus.OK, job.pictures[picture], "image/png", headers)
        raise Refused(HTTPStatus.NOT_FOUND, f"nothing at {url.path}")

    def _post(self) -> None:
        path = urlparse(self.path).path
        parts = [p for p in path.split("/") if p]
        if parts == ["api", "generate"]:
            return self._generate()
        if len(parts) == 4 and parts[3] == "cancel" and self._job(parts) is not None:
            return self._json(self.jobs.cancel(parts[2]).status(), HTTPStatus.ACCEPTED)
        raise Refused(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _job(self, parts: list[str]) -> Job | None:
        """The job of a path /api/jobs/<id>/..., None when there is none."""
        if parts[:2] != ["api", "jobs"] or len(parts) < 3:
            return None
        return self.jobs.jobs.get(parts[2])

    def _generate(self) -> None:
        try:
            request = json.loads(self._body())
        except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, nested too deep
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            raise Refused(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({reason})") from None
        if not isinstance(request, dict):
            raise Refused(HTTPStatus.BAD_REQUEST, "the settings must be a JSON object")
        try:
            job = self.jobs.start(request)
        except Busy as busy:
            raise Refused(HTTPStatus.CONFLICT, str(busy)) from None
        except ConfigError as error:  # one line naming the setting
            raise Refused(HTTPStatus.BAD_REQUEST, str(error)) from None
        self._json({"job": job.id})

    def _body(self) -> bytes:
        """The request's body: a Content-Length (one, a byte count, at most `max_body`), then
        exactly that many bytes within the socket's timeout; else Refused."""
        if "Transfer-Encoding" in self.headers:
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        lengths = set(self.headers.get_all("Content-Length") or [])
        if not lengths:
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "a POST needs a Content-Length header")
        length = lengths.pop().strip()
        if lengths or not (length.isascii() and length.isdigit()):
            raise Refused(
                HTTPStatus.BAD_REQUEST, f"Content-Length must be one byte count, got {length!r}"
            )
        size, limit = int(length), self.limits.max_body
        if size > limit:
            raise Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"a body of {size} bytes is over this server's limit of {limit} (--max-body)",
            )
        try:
            body = self.rfile.read(size)
        except TimeoutError:
            raise Refused(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body did not arrive within {self.timeout:g} s "
                f"(fewer bytes sent than the Content-Length of {size}?)",
            ) from None
        if len(body) < size:
            raise Refused(
                HTTPStatus.BAD_REQUEST, f"the body ended after {len(body)} of {size} bytes"
            )
        return body


def make_server(
    studio: RunStudio, host: str = "127.0.0.1", port: int = 7860
) -> ThreadingHTTPServer:
    """An HTTP server for `studio`, bounded by its `limits` (port 0: any free port; see
    `server.server_address`)."""
    limits = studio.limits
    handler = type(
        "StudioHandler",
        (Handler,),
        {"jobs": Jobs(studio, limits.keep_jobs), "limits": limits, "timeout": limits.timeout},
    )
    return ThreadingHTTPServer((host, port), handler)
