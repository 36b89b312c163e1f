"""Cost of one training step of the masked backbones against the DiT they are built on.

    python benchmarks/masked_step.py                 # the demo's sizes on this machine's CPU
    python benchmarks/masked_step.py --quick         # 1 warm-up + 2 timed steps each
    python benchmarks/masked_step.py --device cuda --batch-size 256

The models come from the demo configs (configs/image/animals/dit.yaml, maskdit.yaml, mdt.yaml:
the same 6 blocks of width 192 on 49 tokens), built the way the train phase builds them. A step is
the train phase's: timesteps from the diffusion's sampler, the backbone's training inputs (the
token mask) drawn from a per-step generator, `training_losses`, backward, AdamW. MaskDiT runs at
mask ratios 0 (the unmasked fine-tuning stage), 0.5 (the paper's) and 0.75; MDT at its
configured 0.3 + U[0, 0.2) with its two passes. Shape of nanoGPT's bench.py: build, warm up,
time, print a table, write benchmarks/results/masked_step_<device>.{json,md}. FLOPs per step
(forward + backward, FlopCounterMode with attention written out) do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from models_forward import time_stage, written_out_attention
from torch.utils.flop_counter import FlopCounterMode

from speed.config import load_config
from speed.runners.build import (
    build_autoencoder,
    build_dataset,
    build_diffusion,
    build_model,
    data_spec,
)
from speed.utils.machine import load_average, run_header

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
DEMO = REPO / "configs/image/animals"
CASES = {  # name -> (config, overrides)
    "DiT": ("dit.yaml", []),
    "MaskDiT, mask 0": ("maskdit.yaml", ["model.mask_ratio=0"]),
    "MaskDiT, mask 0.5": ("maskdit.yaml", ["model.mask_ratio=0.5"]),
    "MaskDiT, mask 0.75": ("maskdit.yaml", ["model.mask_ratio=0.75"]),
    "MDT, 2 passes": ("mdt.yaml", []),
}


def build_step(config: str, overrides: list[str], batch_size: int, device: torch.device):
    """(step function, model) for one case: step(i) takes optimizer step i on a fixed batch."""
    cfg = load_config(DEMO / config, "train", overrides)
    dataset = build_dataset(cfg)
    spec = data_spec(cfg, dataset, build_autoencoder(cfg))
    torch.manual_seed(0)
    model = build_model(cfg, spec).to(device).train()
    diffusion = build_diffusion(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, spec.channels, spec.side, spec.side, device=device)
    y = torch.randint(0, spec.num_classes, (batch_size,), device=device)
    draws = getattr(model, "training_inputs", None)

    def step(i: int) -> None:
        generator = torch.Generator().manual_seed(i)
        t, weights = diffusion.timestep_sampler.sample(batch_size, "cpu", generator=generator)
        kwargs = {"y": y}
        if draws is not None:
            kwargs.update(draws(i, batch_size, generator))
        kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
        terms = diffusion.training_losses(
            model, x, t.to(device), kwargs, weights=weights.to(device)
        )
        terms["loss"].mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, model


def measure(name: str, batch_size: int, device: torch.device, warmup: int, repeats: int) -> dict:
    config, overrides = CASES[name]
    step, model = build_step(config, overrides, batch_size, device)
    counter = FlopCounterMode(display=False)
    with written_out_attention(model), counter:
        step(0)
    calls = iter(range(1, warmup + repeats + 1))
    seconds = time_stage(lambda: step(next(calls)), device, warmup, repeats)
    return {
        "case": name,
        "config": f"configs/image/animals/{config}",
        "overrides": overrides,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops_per_step": counter.get_total_flops() / 1e9,
        "seconds": seconds,
    }


def markdown(rows: list[dict], meta: dict) -> str:
    base = statistics.median(rows[0]["seconds"])
    lines = [
        f"# Training step of the masked backbones ({meta['device']}, {meta['threads']} threads)",
        "",
        f"Batch {meta['batch_size']} of the demo's 28x28x1 images, 10 classes; each model from "
        f"its demo config. Median of {meta['repeats']} timed steps after {meta['warmup']} "
        f"warm-up. Load average before/after: {meta['loadavg_before']} / "
        f"{meta['loadavg_after']} (shared machine: timings are rough). {meta['date']}.",
        "",
        f"| case | params | GFLOP/step | s/step | vs {rows[0]['case']} |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        median = statistics.median(r["seconds"])
        lines.append(
            f"| {r['case']} | {r['params']:,} | {r['gflops_per_step']:.2f} | {median:.4f} | "
            f"{median / base:.2f}x |"
        )
    lines += [
        "",
        "GFLOP/step: forward + backward of the loss (FlopCounterMode, attention as matmuls).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32, help="the demo's data.batch_size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1 warm-up, 2 timed steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--out", type=Path, help="results stem (default: masked_step_<device>)")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats = 1, 2
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meta = run_header(
        args.device,
        args.threads,
        batch_size=args.batch_size,
        warmup=args.warmup,
        repeats=args.repeats,
    )
    rows = []
    for name in args.cases:
        rows.append(measure(name, args.batch_size, device, args.warmup, args.repeats))
        median = statistics.median(rows[-1]["seconds"])
        print(f"{name:20s} {rows[-1]['gflops_per_step']:8.2f} GFLOP  {median:.4f} s/step")
    meta["loadavg_after"] = load_average()
    report = markdown(rows, meta)
    print(report)
    stem = args.out or RESULTS / f"masked_step_{device.type}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    stem.with_suffix(".md").write_text(report)
    return rows


if __name__ == "__main__":
    main()
