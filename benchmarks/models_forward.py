"""Backbone cost: parameters, multiply-adds, and forward / forward+backward time per batch.

    python benchmarks/models_forward.py                       # DiT-S/2 and DiT-B/2 on 32x32x4
    python benchmarks/models_forward.py --models DiT-S/2 --batch-size 8 --repeats 10

Shape of nanoGPT's bench.py: build, warm up, time a few repeats, print a table, write
benchmarks/results/models_forward.{json,md}. Inputs are SD-VAE latents of 256x256 images
(32x32x4), class-conditional with 1000 classes and learned sigma, as in the DiT paper. Timings on a
shared machine vary with its load: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from speed.models import DiT_models
from speed.utils.machine import load_average, run_header

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["DiT-S/2", "DiT-B/2"])
    parser.add_argument("--input-size", type=int, default=32, help="latent side (pixels / 8)")
    parser.add_argument("--in-channels", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per stage")
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations per stage")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "models_forward")
    parser.add_argument("--note", default="", help="a remark saved with the results")
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_stage(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


@contextlib.contextmanager
def written_out_attention(model: torch.nn.Module):
    """Attention as plain matmuls while inside, so that FlopCounterMode counts it (it does not
    see inside the CPU SDPA kernel)."""
    attns = [m for m in model.modules() if hasattr(m, "fused")]
    for m in attns:
        m.fused = False
    try:
        yield
    finally:
        for m in attns:
            m.fused = True


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = DiT_models[name](input_size=args.input_size, in_channels=args.in_channels).to(device)
    n = args.batch_size
    x = torch.randn(n, args.in_channels, args.input_size, args.input_size, device=device)
    t = torch.randint(0, 1000, (n,), device=device)
    y = torch.randint(0, 1000, (n,), device=device)

    model.eval()
    count_macs = FlopCounterMode(display=False)
    with torch.no_grad(), count_macs, written_out_attention(model):
        model(x, t, y)
    with torch.no_grad():
        forward = time_stage(lambda: model(x, t, y), device, args.warmup, args.repeats)

    model.train()

    def train_step():
        model.zero_grad(set_to_none=True)
        model(x, t, y).square().mean().backward()

    backward = time_stage(train_step, device, args.warmup, args.repeats)
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gmacs_per_image": count_macs.get_total_flops() / 2 / n / 1e9,
        "forward_s": forward,
        "forward_backward_s": backward,
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Backbone forward/backward time ({meta['device']}, {meta['threads']} threads)",
        "",
        f"Input {meta['batch_size']} x {meta['in_channels']} x {meta['input_size']} x "
        f"{meta['input_size']}, 1000 classes, learned sigma. Median of {meta['repeats']} timed "
        f"runs after {meta['warmup']} warm-up. Load average before/after: "
        f"{meta['loadavg_before']} / {meta['loadavg_after']} (shared machine: timings are rough).",
        "",
        "| model | params | trainable | GMACs/img | fwd s/batch | fwd+bwd s/batch | train img/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fwd, fwd_bwd = statistics.median(r["forward_s"]), statistics.median(r["forward_backward_s"])
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['trainable_params']:,} | "
            f"{r['gmacs_per_image']:.2f} | {fwd:.3f} | {fwd_bwd:.3f} | "
            f"{meta['batch_size'] / fwd_bwd:.1f} |"
        )
    lines += [
        "",
        "GMACs: multiply-adds per image (torch's FlopCounterMode / 2), the unit of the DiT paper's",
        "'Gflops' column (DiT-S/2 6.06, DiT-B/2 23.01). Trainable excludes the frozen pos_embed.",
    ]
    if meta["note"]:
        lines += ["", f"Note: {meta['note']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meta = run_header(
        args.device, args.threads, batch_size=args.batch_size, input_size=args.input_size,
        in_channels=args.in_channels, warmup=args.warmup, repeats=args.repeats, note=args.note,
    )  # fmt: skip
    rows = [bench_model(name, args, device) for name in args.models]
    meta["loadavg_after"] = load_average()

    table = markdown(rows, meta)
    print(table, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    args.out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
