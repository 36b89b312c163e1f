"""The load test against the service in-process: every request counted, percentiles ordered,
batches seen; the default body of the run's kind (a prompt when GET /options says prompts: true),
accepted by the service; the table and the plot written."""

import asyncio
import json

import httpx
from fastapi.testclient import TestClient

from speed.serve.app import create_app
from speed.serve.client import ServeClient
from speed.serve.engine import Engine
from speed.serve.limits import ServeLimits
from speed.serve.loadtest import (
    DEFAULT_PROMPT,
    DEFAULT_SETTINGS,
    default_body,
    main,
    markdown,
    one_level,
    parse_args,
    plot,
)


def test_a_level_counts_every_request_and_orders_its_percentiles(engine):
    app = create_app(engine, ServeLimits(batch_window=0.2))
    body = {"classes": 1, "count": 2, "num_steps": 2, "format": "npz"}

    async def level():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            return await one_level("http://t", body, 3, 6, {}, transport=transport)

    result = asyncio.run(level())
    assert (result["requests"], result["failed"], result["concurrency"]) == (6, 0, 3)
    assert 0 < result["p50_s"] <= result["p95_s"] <= result["p99_s"]
    assert result["images_per_s"] == 2 * result["qps"] > 0
    assert result["mean_batch_images"] > 2  # three clients within the window share batches


def test_the_default_body_is_of_the_runs_kind_and_served(engine, tiny_text_run):
    """Without --body: a prompt to a text-to-image service (its /options says prompts: true),
    class 0 to a class-conditional one, each answered 200; no condition to an unconditional
    run. (An app's lifespan runs once: a fresh app for each client.)"""
    engines = (Engine(tiny_text_run[0]), engine)

    def app(engine):
        return create_app(engine, ServeLimits(batch_window=0.001))

    bodies = []
    for served in engines:
        client = ServeClient("http://testserver")
        with TestClient(app(served)) as client.http:
            bodies.append(default_body(client.options()))
    assert bodies == [
        {"prompt": DEFAULT_PROMPT, **DEFAULT_SETTINGS},
        {"classes": 0, **DEFAULT_SETTINGS},
    ]
    assert default_body({"prompts": False, "classes": []}) == DEFAULT_SETTINGS

    async def level(served, body):
        service = app(served)
        async with service.router.lifespan_context(service):
            transport = httpx.ASGITransport(app=service)
            return await one_level("http://t", {**body, "num_steps": 2}, 1, 2, {}, transport)

    for served, body in zip(engines, bodies):
        result = asyncio.run(level(served, body))
        assert (result["requests"], result["failed"]) == (2, 0)


def test_no_service_at_the_url_is_one_line(tmp_path, capsys):
    assert main(["http://127.0.0.1:9", "--out", str(tmp_path / "r.json")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: cannot reach the service at http://127.0.0.1:9")


def test_the_table_and_the_plot(tmp_path):
    level = {
        "concurrency": 2,
        "requests": 4,
        "failed": 0,
        "seconds": 2.0,
        "qps": 2.0,
        "images_per_s": 2.0,
        "p50_s": 0.5,
        "p95_s": 0.9,
        "p99_s": 1.0,
        "mean_batch_images": 2.0,
    }
    results = {"batched": {"machine": "x", "date": "d", "body": "{}", "levels": [level]}}
    table = markdown(results)
    assert "| 2 | 2.00 | 0.500 | 0.900 | 1.000 | 2.00 | 2.0 | 0 |" in table
    plot(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    args = parse_args(["http://h:1", "--concurrency", "1", "4", "--body", json.dumps({"count": 2})])
    assert args.concurrency == [1, 4] and json.loads(args.body) == {"count": 2}
