"""The page's endpoints from Python (standard library only): start a generation, follow its
progress, fetch the pictures. Used by the tests; handy for scripting a running app.

    client = AppClient("http://127.0.0.1:7860")
    result = client.generate(classes=[0, 3], sampler="ddim", num_steps=25, seed=1)
    result["grid"]  # uint8 HWC array
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np
from PIL import Image

from speed.errors import UserError


class AppRequestError(UserError):
    """The app refused a request (a bad setting, a busy server) or its generation failed."""


class AppClient:
    """A client of the app served at `url` (e.g. http://127.0.0.1:7860)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, data: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return reply.read()
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = f"{error} ({body[:200]!r})"
            raise AppRequestError(message) from None

    def options(self) -> dict:
        """Checkpoints, classes, samplers and the run's defaults."""
        return json.loads(self._get("/api/options"))

    def start(self, **settings) -> str:
        """Start a generation with `settings` (fields of `speed.app.studio.FIELDS`); its id."""
        return json.loads(self._get("/api/generate", json.dumps(settings).encode()))["job"]

    def status(self, job: str) -> dict:
        return json.loads(self._get(f"/api/jobs/{job}"))

    def cancel(self, job: str) -> dict:
        """Ask `job` to stop after its current sampling step; its status (see `wait`)."""
        return json.loads(self._get(f"/api/jobs/{job}/cancel", b""))

    def wait(
        self, job: str, timeout: float = 600.0, poll: float = 0.1, on_status: Callable | None = None
    ) -> dict:
        """Poll until the job ends (done or cancelled); its last status. AppRequestError if it
        failed."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(job)
            if on_status is not None:
                on_status(status)
            if status["state"] == "error":
                raise AppRequestError(status["error"])
            if status["state"] in ("done", "cancelled"):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still running after {timeout:g} s")
            time.sleep(poll)

    def png(self, job: str, picture: str = "grid", download: bool = False) -> bytes:
        """The PNG of a finished job's `picture` ("grid" or "strip")."""
        return self._get(f"/api/jobs/{job}/{picture}.png" + ("?download=1" if download else ""))

    def generate(self, **settings) -> dict:
        """Start, wait, fetch: {"grid", "strip": uint8 HWC arrays, "statuses": those seen}."""
        job = self.start(**settings)
        statuses = []
        self.wait(job, on_status=statuses.append)
        pictures = {
            name: np.asarray(Image.open(io.BytesIO(self.png(job, name))))
            for name in ("grid", "strip")
        }
        return {**pictures, "statuses": statuses}
