"""The HTTP API over the tiny run: images as PNG and npz, batching of concurrent requests,
one-line refusals, the bearer token, probes and metrics."""

import asyncio
import io

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from speed.errors import ConfigError
from speed.serve.__main__ import main
from speed.serve.app import create_app
from speed.serve.limits import ServeLimits


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine, ServeLimits(batch_window=0.001))) as client:
        yield client


def test_a_png_is_the_engines_picture(client, engine):
    reply = client.post("/generate", json={"classes": "cat", "seeds": [4], "num_steps": 2})
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(reply.content)))
    (expected,) = engine.sample([engine.job(classes="cat", seeds=[4], num_steps=2)])
    assert np.array_equal(picture, expected[0, :, :, 0])
    assert reply.headers["x-seeds"] == "4"


def test_npz_holds_images_labels_and_seeds(client):
    body = {"classes": [1, "dog"], "count": 2, "seeds": 7, "num_steps": 2, "format": "npz"}
    reply = client.post("/generate", json=body)
    assert reply.status_code == 200
    arrays = np.load(io.BytesIO(reply.content))
    assert arrays["arr_0"].shape == (2, 28, 28, 1) and arrays["arr_0"].dtype == np.uint8
    assert arrays["arr_1"].tolist() == [1, 4] and arrays["seeds"].tolist() == [7, 8]


def test_concurrent_requests_are_one_batch_with_the_pixels_of_each_alone(engine):
    """Three requests within the window share a batch (X-Batch-Images = 5) and each gets the
    bytes it gets when served alone (max_batch=1: no batching)."""
    bodies = [
        {"classes": "zebra", "count": 2, "seeds": [1, 2], "sampler": "ddpm", "num_steps": 3},
        {"classes": 3, "count": 1, "seeds": 9, "sampler": "ddpm", "num_steps": 3},
        {"classes": [0, 5], "count": 2, "seeds": 1, "sampler": "ddpm", "num_steps": 3},
    ]

    async def post_all(app):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                return await asyncio.gather(*(http.post("/generate", json=b) for b in bodies))

    batched = asyncio.run(post_all(create_app(engine, ServeLimits(batch_window=0.5))))
    alone = asyncio.run(post_all(create_app(engine, ServeLimits(max_batch=1, max_images=1 + 1))))
    assert [r.headers["x-batch-images"] for r in batched] == ["5"] * 3
    assert [r.headers["x-batch-images"] for r in alone] == ["2", "1", "2"]
    assert [r.content for r in batched] == [r.content for r in alone]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 422, "JSON decode error"),
        ({"colour": 1}, 422, "colour: unknown setting; known: classes, count"),
        ({"count": 0}, 422, "count: Input should be greater than or equal to 1"),
        ({"classes": 1, "count": 17}, 400, "count must lie in 1..16 on this server (--max-images)"),
        ({"classes": 1, "num_steps": 5000}, 400, "num_steps must lie in 1..1000"),
        ({"classes": "zebar"}, 400, "did you mean 'zebra'"),
        ({"classes": 1, "sampler": "heun"}, 400, "'heun' samples the interpolant objective"),
        ({"classes": 1, "guidance_scale": "nan"}, 400, "guidance_scale must be a finite number"),
    ],
)
def test_bad_requests_are_one_line(client, body, status, message):
    if isinstance(body, bytes):
        reply = client.post("/generate", content=body, headers={"content-type": "application/json"})
    else:
        reply = client.post("/generate", json=body)
    assert reply.status_code == status
    assert message in reply.json()["error"] and "\n" not in reply.json()["error"]


def test_the_bearer_token_guards_generation_not_the_probes(engine):
    with TestClient(create_app(engine, ServeLimits(), token="s3cret")) as client:
        body = {"classes": 1, "num_steps": 1}
        assert client.post("/generate", json=body).status_code == 401
        wrong = client.post("/generate", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = client.post("/generate", json=body, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
        assert client.get("/healthz").status_code == 200 == client.get("/readyz").status_code


def test_probes_options_and_metrics(client):
    assert client.get("/healthz").json() == {"alive": True}
    assert client.get("/readyz").json()["ready"] is True
    options = client.get("/options").json()
    assert options["classes"][9] == "zebra" and "ddim" in options["samplers"]
    client.post("/generate", json={"classes": 1, "count": 2, "num_steps": 1})
    text = client.get("/metrics").text
    assert 'speed_serve_requests_total{code="200",endpoint="/generate"}' in text
    assert "speed_serve_request_seconds_bucket" in text and "speed_serve_queue_images 0.0" in text
    assert "speed_serve_batch_images_count" in text and "speed_serve_images_total" in text


def test_limits_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="--max-images 9 is over --max-queue 8"):
        ServeLimits(max_images=9, max_queue=8)
    with pytest.raises(ConfigError, match="--batch-window must be > 0"):
        ServeLimits(batch_window=0)


def test_the_command_refuses_a_run_without_checkpoints_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "holds no checkpoints" in err


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "must be class indices or names"),
        ([1], "must be class indices or names"),
        (2.5, "must be class indices or names"),
        ("-1", "outside 0..9"),
    ],
)
def test_class_lookup_refuses_what_is_not_a_class(engine, value, message):
    with pytest.raises(ConfigError, match=message):
        engine.classes.lookup(value)
