"""The page's bounds: what one request may ask for, requests that are malformed or never finish
(sent through raw sockets), cancelling a generation, and classes named instead of numbered."""

import json
import re
import socket
import threading
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

from speed.app.__main__ import main as app_main
from speed.app.client import AppClient, AppRequestError
from speed.app.limits import Limits
from speed.app.server import Jobs, make_server
from speed.app.studio import RunStudio
from speed.utils.bounds import flag

STRICT = Limits(max_images=8, max_steps=5, max_body=2048, timeout=0.5)


@pytest.fixture(scope="module")
def strict_url(tiny_run):
    """The app over `tiny_run` with small bounds and a half-second timeout."""
    server = make_server(RunStudio(tiny_run[0], limits=STRICT), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server_close()


def exchange(url: str, raw: bytes) -> tuple[int | None, dict | None]:
    """Send `raw` bytes on a new connection (left open) and read until the server closes it:
    (status, JSON body), or (None, None) when it closed without answering. The client's own
    20 s timeout only keeps a broken server from hanging the test."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=20) as connection:
        connection.sendall(raw)
        data = b""
        while chunk := connection.recv(1 << 16):
            data += chunk
    if not data:
        return None, None
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head, head
    return int(head.split()[1]), json.loads(body)


def post(body: bytes, *headers: str) -> bytes:
    lines = ["POST /api/generate HTTP/1.1", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---- what one request may ask for ----


def test_a_request_for_100000_images_is_refused_before_any_work(app_url):
    client = AppClient(app_url)
    with pytest.raises(AppRequestError) as caught:
        client.start(classes=[0] * 6250, seeds=16)  # 100,000 images
    message = str(caught.value)
    assert "draws 100000 images (6250 classes x 16 seeds)" in message
    assert "at most 256 per request (--max-images)" in message and "\n" not in message
    job = client.start(classes=[0], seeds=1, num_steps=1)  # nothing was started: not busy
    assert client.wait(job)["state"] == "done"


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"classes": [0, 1, 2], "seeds": 3}, "draws 9 images (3 classes x 3 seeds)"),
        ({"num_steps": 6}, "num_steps must lie in 1..5 on this server (--max-steps)"),
        ({"seed": 2**64}, "seed must lie in 0..4294967295"),
        ({"seed": -1}, "seed must lie in 0..4294967295"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number"),
        ({"num_steps": float("nan")}, "num_steps must be an integer"),
        ({"classes": 3}, "classes must be a list"),
    ],
)
def test_requests_over_the_servers_bounds_are_refused(strict_url, settings, message):
    with pytest.raises(AppRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AppClient(strict_url).start(**settings)


def test_the_options_state_the_bounds(strict_url):
    options = AppClient(strict_url).options()
    assert (options["max_images"], options["max_steps"], options["max_seeds"]) == (8, 5, 16)


def test_the_bounds_are_flags_of_the_app(tiny_run, capsys):
    assert app_main([str(tiny_run[0]), "--max-images", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-images must be > 0, got 0\n"


# ---- malformed, oversized and unfinished requests ----


@pytest.mark.parametrize(
    "raw,status,message",
    [
        (post(b"{}"), 411, "needs a Content-Length"),
        (post(b"{}", "Content-Length: abc"), 400, "Content-Length must be one byte count"),
        (post(b"{}", "Content-Length: -1"), 400, "Content-Length must be one byte count"),
        (post(b"{}", "Content-Length: 2", "Content-Length: 3"), 400, "one byte count"),
        (post(b"{}", "Content-Length: 100000000"), 413, "over this server's limit of 2048"),
        (post(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 411, "Content-Length"),
        (post(b"[1]", "Content-Length: 3"), 400, "must be a JSON object"),
        (post(b"\xff\xfe", "Content-Length: 2"), 400, "the body is not JSON"),
        (post(b"{", "Content-Length: 1"), 400, "the body is not JSON"),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400, "Bad request"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "Request-URI Too Long"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, "Too many headers"),
        (b"BREW /pot HTTP/1.1\r\n\r\n", 501, "Unsupported method"),
        (b"GET /api/jobs/999 HTTP/1.1\r\n\r\n", 404, "nothing at /api/jobs/999"),
        (b"POST /api/jobs/999/cancel HTTP/1.1\r\n\r\n", 404, "nothing at"),
    ],
)
def test_malformed_requests_get_a_4xx_in_json(strict_url, raw, status, message):
    answer = exchange(strict_url, raw)
    assert answer[0] == status and message in answer[1]["error"], answer


def test_a_deeply_nested_body_is_a_400_not_a_traceback(app_url):
    body = b"[" * 60000
    answer = exchange(app_url, post(body, f"Content-Length: {len(body)}"))
    assert answer[0] == 400 and "RecursionError" in answer[1]["error"]


def test_a_body_shorter_than_its_content_length_times_out_with_408(strict_url):
    status, answer = exchange(strict_url, post(b'{"seed": 1}', "Content-Length: 100"))
    assert status == 408 and "did not arrive within 0.5 s" in answer["error"]


def test_a_request_whose_headers_never_end_times_out_with_408(strict_url):
    """A slowloris client: headers begun, never finished; the thread is freed."""
    status, answer = exchange(strict_url, b"POST /api/generate HTTP/1.1\r\nHost: test\r\nX-")
    assert status == 408 and "headers did not arrive" in answer["error"]


def test_an_unfinished_request_line_is_closed(strict_url):
    assert exchange(strict_url, b"GET /api/opt") == (None, None)
    assert AppClient(strict_url).options()["max_images"] == 8  # the server still answers


# ---- cancel ----


def test_a_cancelled_generation_stops_between_steps(app_url):
    client = AppClient(app_url)
    job = client.start(classes=[0], seeds=1, num_steps=1000, sampler="ddpm")
    assert client.cancel(job)["state"] in ("running", "cancelled")
    status = client.wait(job, timeout=120)
    assert status["state"] == "cancelled" and 0 < status["done"] < 2000
    with pytest.raises(AppRequestError, match="nothing at"):
        client.png(job)  # no pictures
    again = client.start(classes=[0], seeds=1, num_steps=1)  # the server is free again
    assert client.wait(again)["state"] == "done"
    assert client.cancel(again)["state"] == "done"  # a finished job stays finished


class InstantStudio:
    """A stand-in studio whose generations finish at once."""

    def prepare(self, request):
        return SimpleNamespace(ckpt_path="x/0000001.pt", sampler="ddim", num_steps=2, seed=0), None

    def generate(self, request, progress):
        return {"grid": b"png"}


def test_only_the_newest_finished_jobs_are_kept():
    jobs = Jobs(InstantStudio(), keep=2)
    started = []
    for _ in range(4):
        started.append(jobs.start({}))
        for _ in range(200):
            if started[-1].state != "running":
                break
            threading.Event().wait(0.01)
    assert list(jobs.jobs) == [started[2].id, started[3].id]


# ---- classes by name ----


def test_classes_can_be_named_in_any_case(app_url):
    client = AppClient(app_url)
    names = client.options()["classes"]
    by_name = client.generate(classes=["Bird", names[4].upper(), "3"], seeds=1, num_steps=2)
    by_index = client.generate(classes=[1, 4, 3], seeds=1, num_steps=2)
    assert (by_name["grid"] == by_index["grid"]).all()


def test_a_misspelt_class_lists_the_valid_names(app_url):
    with pytest.raises(AppRequestError) as caught:
        AppClient(app_url).start(classes=["berd"])
    message = str(caught.value)
    assert message.startswith("unknown class 'berd'; did you mean 'bird'")
    assert "classes: bear, bird, cat" in message and "(or their indices 0..9)" in message


# ---- the docs (docs/app.md) ----

DOC = (Path(__file__).resolve().parents[2] / "docs/app.md").read_text()


def test_the_docs_list_every_bound_with_its_default():
    for item in fields(Limits):
        assert f"| `--{flag(item.name)}` | `{item.default:g}` |" in DOC


def test_the_docs_options_example_has_the_real_keys(app_url):
    example = json.loads(re.search(r"```json\n(.*?)```", DOC, re.S).group(1))
    options = AppClient(app_url).options()
    assert example.keys() == options.keys()
    assert example["defaults"].keys() == options["defaults"].keys()


def test_the_docs_python_example_runs(app_url):
    snippet = re.search(r"```python\n(.*?)```", DOC, re.S).group(1)
    snippet = snippet.replace('"http://127.0.0.1:7860"', repr(app_url))
    snippet = snippet.replace("num_steps=25", "num_steps=4")  # seconds on the tiny run
    exec(compile(snippet, "docs/app.md", "exec"), {})
