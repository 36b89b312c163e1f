"""A graceful shutdown end to end: SIGTERM to `python -m speed.serve` while a request samples;
the request still gets its images (or, when the graceful timeout ends first, a 503 that says so
instead of uvicorn's bare 500), then the process ends (by that signal, which uvicorn re-raises
after its shutdown)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "graceful, answer",
    [(600, 200), (1, 503)],  # 600 s: room for the 8 images on a loaded box
)
def test_sigterm_finishes_the_request_in_flight(tiny_run, graceful, answer):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "speed.serve", str(tiny_run), "--port", str(port)]
    command += ["--graceful-timeout", str(graceful)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        replies = []
        body = {"classes": 1, "count": 8, "num_steps": 150, "sampler": "ddim"}
        post = threading.Thread(
            target=lambda: replies.append(httpx.post(f"{url}/generate", json=body, timeout=600))
        )
        post.start()
        time.sleep(1.0)  # the request is sampling
        server.send_signal(signal.SIGTERM)
        post.join(timeout=600)
        (reply,) = replies
        assert reply.status_code == answer
        if answer == 200:
            assert reply.headers["x-batch-images"] == "8"
        else:
            assert json.loads(reply.text) == {
                "error": "the service shut down before this request was done"
            }
            assert reply.headers["retry-after"]
        # uvicorn re-raises the signal once it has shut down, as a process ended by it
        assert server.wait(timeout=600) == -signal.SIGTERM
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
