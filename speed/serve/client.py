"""The service's API from Python (httpx): its options and images as numpy arrays.

client = ServeClient("http://127.0.0.1:8000")
result = client.generate(classes="zebra", count=4, seeds=7, sampler="ddim", num_steps=25)
result["images"]  # uint8 [4, H, W, C]
"""

from __future__ import annotations

import io
import os

import httpx
import numpy as np

from speed.errors import UserError

TOKEN_ENV = "SPEED_SERVE_TOKEN"  # the bearer token, when the service needs one


class ServeRequestError(UserError):
    """The service refused a request (its one-line message) or could not be reached."""


class ServeClient:
    """A client of the service at `url`; `token` defaults to $SPEED_SERVE_TOKEN. `transport`:
    an httpx transport (tests pass the app's ASGI transport)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0, transport=None):
        token = token or os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            reply = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ServeRequestError(f"cannot reach the service at {self.url}: {error}") from None
        if reply.status_code != 200:
            try:
                message = reply.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {reply.status_code}: {reply.text[:200]!r}"
            raise ServeRequestError(f"the service at {self.url}: {message}")
        return reply

    def options(self) -> dict:
        """Checkpoint, backend, classes, samplers, bounds and the run's defaults."""
        return self._call("GET", "/options").json()

    def generate(self, **settings) -> dict:
        """POST /generate with `settings` (docs/serve.md); {"images": uint8 [N, H, W, C],
        "labels": [N] or None, "prompts": [N] or None, "seeds": [N], "batch_images": images of
        the batch it joined}."""
        reply = self._call("POST", "/generate", json={**settings, "format": "npz"})
        arrays = np.load(io.BytesIO(reply.content))
        return {
            "images": arrays["arr_0"],
            "labels": arrays["arr_1"] if "arr_1" in arrays else None,
            "prompts": arrays["prompts"].tolist() if "prompts" in arrays else None,
            "seeds": arrays["seeds"],
            "batch_images": int(reply.headers["x-batch-images"]),
        }

    def close(self) -> None:
        self.http.close()
