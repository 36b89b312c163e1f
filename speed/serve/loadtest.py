"""python -m speed.serve.loadtest URL [--concurrency 1 2 4 8] [--requests 32] [--label batched]:
drive a running service with concurrent POST /generate requests (an asyncio client on httpx) and
report, per concurrency, QPS, latency percentiles p50/p95/p99, images/s and the mean images per
batch the service reported (X-Batch-Images). Without `--body` each request is one image of the
run's kind, as GET /options describes it: a prompt for a text-to-image run, class 0 for a
class-conditional one, no condition for an unconditional one (`default_body`).

Each concurrency level is `--requests` requests from that many clients in a closed loop (a client
sends its next request when its last answer arrived), after `--warmup` requests. Results go to
`--out` (JSON, one entry per --label, so a run against a service with batching and one against
`--max-batch 1` sit side by side), a Markdown table beside it, and with `--plot` a figure of
latency and images/s against concurrency for every label in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

from speed.errors import report_user_error
from speed.serve.client import ServeClient, ServeRequestError
from speed.utils.machine import device_name

DEFAULT_SETTINGS = {"count": 1, "sampler": "ddim", "num_steps": 10, "format": "npz"}
DEFAULT_PROMPT = "a dog left of a cat"  # a caption of the text-to-image demo (animals_text)


def default_body(options: dict) -> dict:
    """The body sent without --body, chosen by the service's GET /options: DEFAULT_SETTINGS
    with DEFAULT_PROMPT for a text-to-image run (`prompts: true`), class 0 for a
    class-conditional one, nothing more for an unconditional one."""
    if options["prompts"]:
        return {"prompt": DEFAULT_PROMPT, **DEFAULT_SETTINGS}
    return {"classes": 0, **DEFAULT_SETTINGS} if options["classes"] else dict(DEFAULT_SETTINGS)


async def one_level(
    url: str, body: dict, concurrency: int, requests: int, headers: dict, transport=None
) -> dict:
    """Send `requests` requests from `concurrency` clients; the level's measurements."""
    latencies, batches, failures = [], [], []
    todo = iter(range(requests))

    async def client(http: httpx.AsyncClient):
        for _ in todo:
            start = time.perf_counter()
            reply = await http.post("/generate", json=body, headers=headers)
            if reply.status_code != 200:
                failures.append(reply.status_code)
                continue
            latencies.append(time.perf_counter() - start)
            batches.append(int(reply.headers.get("x-batch-images", 0)))

    limits = httpx.Limits(max_connections=concurrency)
    client_args = {"base_url": url, "timeout": 600, "limits": limits, "transport": transport}
    async with httpx.AsyncClient(**client_args) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    done = len(latencies)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if done else [float("nan")] * 3
    return {
        "concurrency": concurrency,
        "requests": done,
        "failed": len(failures),
        "seconds": elapsed,
        "qps": done / elapsed,
        "images_per_s": done * body.get("count", 1) / elapsed,
        "p50_s": float(p50),
        "p95_s": float(p95),
        "p99_s": float(p99),
        "mean_batch_images": float(np.mean(batches)) if batches else 0.0,
    }


async def load_test(args: argparse.Namespace, body: dict) -> list[dict]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    await one_level(args.url, body, 1, args.warmup, headers)
    levels = []
    for concurrency in args.concurrency:
        level = await one_level(args.url, body, concurrency, args.requests, headers)
        levels.append(level)
        print(row(level), flush=True)
    return levels


HEADER = "| concurrency | QPS | p50 s | p95 s | p99 s | images/s | images/batch | failed |"


def row(r: dict) -> str:
    return (
        f"| {r['concurrency']} | {r['qps']:.2f} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | "
        f"{r['p99_s']:.3f} | {r['images_per_s']:.2f} | {r['mean_batch_images']:.1f} | "
        f"{r['failed']} |"
    )


def markdown(results: dict) -> str:
    parts = []
    for label, entry in results.items():
        parts += [f"## {label}", "", f"{entry['machine']}; {entry['date']}; body {entry['body']}"]
        parts += ["", HEADER, "|---" * 8 + "|", *map(row, entry["levels"]), ""]
    return "\n".join(parts)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, entry in results.items():
        levels = entry["levels"]
        c = [r["concurrency"] for r in levels]
        left.plot(c, [r["p50_s"] for r in levels], "o-", label=f"{label} p50")
        left.plot(c, [r["p99_s"] for r in levels], "x--", label=f"{label} p99")
        right.plot(c, [r["images_per_s"] for r in levels], "o-", label=label)
    for ax, name in ((left, "latency (s)"), (right, "images / s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m speed.serve.loadtest", description=__doc__)
    parser.add_argument("url", help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=32, help="requests per level")
    parser.add_argument("--warmup", type=int, default=2, help="requests sent first, not counted")
    parser.add_argument(
        "--body",
        help="POST /generate JSON (default: one image, 10 DDIM steps, npz, of class 0 or, when "
        "GET /options says prompts: true, of a prompt)",
    )
    parser.add_argument("--label", default="service", help="this run's name in --out")
    parser.add_argument("--token", help="bearer token, when the service needs one")
    parser.add_argument("--out", default="benchmarks/results/serve_loadtest.json")
    parser.add_argument("--plot", help="also draw every label of --out into this PNG")
    parser.add_argument("--note", default="", help="said beside the machine (e.g. shared load)")
    args = parser.parse_args(argv)
    if min(args.concurrency) < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--concurrency and --requests must be >= 1, --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.body is None:
            client = ServeClient(args.url, args.token)
            body = default_body(client.options())
            client.close()
        else:
            body = json.loads(args.body)
        print(f"body {json.dumps(body)}\n{HEADER}\n" + "|---" * 8 + "|", flush=True)
        levels = asyncio.run(load_test(args, body))
    except httpx.TransportError as error:
        print(f"error: cannot reach {args.url}: {error}", file=sys.stderr)
        return 2
    except ServeRequestError as error:  # GET /options: refused, or no service there
        return report_user_error(error)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    machine = device_name()
    results[args.label] = {
        "machine": f"{machine} {args.note}".strip(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "body": json.dumps(body),
        "levels": levels,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results))
    if args.plot:
        plot(results, Path(args.plot))
    print(f"loadtest: wrote {out} and {out.with_suffix('.md').name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
