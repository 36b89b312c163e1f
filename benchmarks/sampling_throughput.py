"""Sampling throughput: images per second of each sampler in fp32, bf16 and bf16 + compile.

    python benchmarks/sampling_throughput.py                  # demo UNet and demo DiT on the CPU
    python benchmarks/sampling_throughput.py --device cuda    # the same on a GPU
    python benchmarks/sampling_throughput.py --batch-size 4 --samplers ddim-25 --repeats 1

The modes are what the config keys `precision` and `compile` give the inference and sample
phases: the model's forward under bf16 autocast with the sampler's arithmetic in float32
(`speed.utils.precision.autocast_denoiser`), and the model compiled in place as
`speed.runners.build.build_sampling_model` does. The models are the demo's (configs/image/animals:
the ADM UNet of base.yaml and the DiT of dit.yaml, 28x28x1, 10 classes) with seeded random
weights, or a checkpoint's with `--ckpt unet=PATH`: a step costs the same whatever the weights,
but only trained weights make the image-difference columns meaningful. Every setting samples one
batch from the inference phase's noise with guidance 2.0 (a doubled batch, as the demo), through
`benchmarks/sampling.py`'s `time_sampler`. Per model and mode: one untimed warm-up (it includes
the compilation, timed on its own), then `--repeats` timed runs of each sampler; images/s is the
batch over the median run. Shape of nanoGPT's bench.py: build, warm up, time, print a table,
write benchmarks/results/sampling_throughput_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from sampling import time_sampler

from speed.config import load_config
from speed.errors import run_cli
from speed.runners.build import (
    DataSpec,
    build_autoencoder,
    build_diffusion,
    build_model,
    build_sampling_model,
)
from speed.runners.inference import image_noise, sample_labels
from speed.utils.machine import cpu_isa, load_average, run_header

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs/image/animals"
MODELS = {"unet": CONFIGS / "base.yaml", "dit": CONFIGS / "dit.yaml"}
SPEC = DataSpec(channels=1, side=28, num_classes=10)  # animal-mnist, as the demo's checkpoints
# mode -> (precision, compile)
MODES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+compile": ("bf16", True)}
SAMPLERS = ("ddim-25", "ddpm-100", "dpm_solver++-10")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), help="NAME-STEPS")
    parser.add_argument("--ckpt", action="append", default=[], help="MODEL=PATH (trained weights)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per sampler call")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting")
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, help="default: results/sampling_throughput_<device>")
    parser.add_argument("--note", default="", help="a remark saved with the results")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1:
        parser.error("--batch-size and --repeats must be >= 1")
    try:
        args.samplers = [parse_sampler(s) for s in args.samplers]
        args.ckpt = dict(parse_ckpt(c) for c in args.ckpt)
    except ValueError as err:
        parser.error(str(err))
    kind = "cuda" if torch.device(args.device).type == "cuda" else f"cpu_{cpu_isa()}"
    args.out = args.out or RESULTS / f"sampling_throughput_{kind}"
    return args


def parse_sampler(text: str) -> tuple[str, int]:
    """'dpm_solver++-10' -> ('dpm_solver++', 10)."""
    name, _, steps = text.rpartition("-")
    if not name or not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"--samplers takes NAME-STEPS such as ddim-25, got '{text}'")
    return name, int(steps)


def parse_ckpt(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if name not in MODELS or not path:
        raise ValueError(f"--ckpt takes MODEL=PATH with MODEL one of {', '.join(MODELS)}")
    return name, Path(path)


# ---- models ----


def load_model(name: str, ckpt: Path | None, device: torch.device):
    """(model in eval mode, diffusion, autoencoder, config) of one demo model: the checkpoint's
    weights (EMA; the file is trusted: `--ckpt` names it), or seeded random ones with the
    zero-initialised layers (adaLN-Zero, output convolutions) given small values, so that the
    model's output is not a constant."""
    words = ["trust_checkpoint=true"] + ([f"ckpt_path={ckpt}"] if ckpt else [])
    cfg = load_config(MODELS[name], "inference", words)
    autoencoder = build_autoencoder(cfg).to(device)
    if ckpt is not None:
        model = build_sampling_model(cfg, autoencoder, device)[0]
    else:
        torch.manual_seed(0)
        model = build_model(cfg, SPEC)
        for p in model.parameters():
            if not p.detach().any():
                p.data.normal_(0, 0.02)
        model = model.to(device).eval()
    return model, build_diffusion(cfg), autoencoder, cfg


def prepare(model: torch.nn.Module, compile_model: bool) -> torch.nn.Module:
    """The model of a mode: a compiled copy (in place, as build_sampling_model) or itself."""
    if not compile_model:
        return model
    compiled = copy.deepcopy(model)
    compiled.compile()
    return compiled


# ---- timing ----


def bench_mode(model, diffusion, autoencoder, cfg, mode, noise, labels, args) -> list[dict]:
    """One row per sampler: images/s (batch over the median of `repeats` runs), the warm-up's
    seconds (compilation included) and the images of the last run (uint8)."""
    precision, compile_model = MODES[mode]
    model = prepare(model, compile_model)
    kw = dict(
        batch_size=len(noise),
        seed=cfg.seed,
        guidance_scale=args.guidance_scale,
        clip_denoised=cfg.clip_denoised,
        precision=precision,
    )
    _, warmup_s = time_sampler(model, diffusion, autoencoder, noise, labels, "ddim", 2, **kw)
    rows = []
    for sampler, steps in args.samplers:
        seconds = []
        for _ in range(args.repeats):
            images, s = time_sampler(
                model, diffusion, autoencoder, noise, labels, sampler, steps, **kw
            )
            seconds.append(s)
        median = statistics.median(seconds)
        rows.append(
            dict(
                mode=mode,
                sampler=f"{sampler}-{steps}",
                seconds=seconds,
                images_per_s=len(noise) / median,
                warmup_s=warmup_s,
                images=images,
            )
        )
        print(f"  {mode:>13} {sampler}-{steps}: {len(noise) / median:.2f} images/s", flush=True)
    return rows


def add_differences(rows: list[dict]) -> None:
    """Each row's max and mean |pixel - fp32 pixel| over its images (uint8 levels), where the
    same sampler ran in fp32."""
    reference = {r["sampler"]: r["images"] for r in rows if r["mode"] == "fp32"}
    for r in rows:
        if r["sampler"] in reference:
            difference = np.abs(r["images"].astype(int) - reference[r["sampler"]])
            r["max_abs_diff"], r["mean_abs_diff"] = int(difference.max()), difference.mean()


# ---- report ----


def markdown(results: dict[str, list[dict]], meta: dict) -> str:
    lines = [
        f"# Sampling throughput ({meta['device']}, {meta['threads']} threads)",
        "",
        f"Batch {meta['batch_size']} images with guidance {meta['guidance_scale']} (a doubled "
        f"batch of {2 * meta['batch_size']} per model call), 28x28x1; images/s = batch / median "
        f"of {meta['repeats']} timed runs after one warm-up. torch {meta['torch']}, "
        f"{meta['date']}. Load average before/after: {meta['loadavg_before']} / "
        f"{meta['loadavg_after']}.",
    ]
    for name, rows in results.items():
        weights = meta["weights"][name]
        lines += [
            "",
            f"## {name} ({meta['params'][name] / 1e6:.2f}M params, {weights})",
            "",
            "| sampler | mode | images/s | vs fp32 | warm-up s | max / mean abs diff (levels) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        fp32 = {r["sampler"]: r["images_per_s"] for r in rows if r["mode"] == "fp32"}
        for r in sorted(rows, key=lambda r: r["sampler"]):
            ratio = (
                f"{r['images_per_s'] / fp32[r['sampler']]:.2f}x" if r["sampler"] in fp32 else "-"
            )
            diff = f"{r['max_abs_diff']} / {r['mean_abs_diff']:.3f}" if "max_abs_diff" in r else "-"
            lines.append(
                f"| {r['sampler']} | {r['mode']} | {r['images_per_s']:.3g} | {ratio} | "
                f"{r['warmup_s']:.1f} | {diff} |"
            )
    lines += [
        "",
        "Differences: uint8 pixel levels (0-255) against the fp32 images of the same sampler,",
        "noise and generator; with random weights they say little about a trained model.",
    ]
    if meta["note"]:
        lines += ["", f"Note: {meta['note']}"]
    return "\n".join(lines) + "\n"


# ---- main ----


def benchmark(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meta = run_header(
        args.device,
        args.threads,
        command=" ".join(["python", "benchmarks/sampling_throughput.py", *sys.argv[1:]]),
        batch_size=args.batch_size,
        repeats=args.repeats,
        guidance_scale=args.guidance_scale,
        params={},
        weights={},
        note=args.note,
    )
    results = {}
    for name in args.models:
        ckpt = args.ckpt.get(name)
        model, diffusion, autoencoder, cfg = load_model(name, ckpt, device)
        meta["params"][name] = sum(p.numel() for p in model.parameters())
        meta["weights"][name] = f"weights of {ckpt}" if ckpt else "random weights"
        noise = image_noise(SPEC.channels, SPEC.side, cfg.seed, range(args.batch_size))
        labels = torch.from_numpy(sample_labels(cfg, SPEC.num_classes, args.batch_size))
        print(f"{name}:", flush=True)
        rows = []
        for mode in args.modes:
            rows += bench_mode(
                model, diffusion, autoencoder, cfg, mode, noise.to(device), labels.to(device), args
            )
        add_differences(rows)
        for r in rows:
            del r["images"]
        results[name] = rows
    meta["loadavg_after"] = load_average()
    return {"meta": meta, "results": results}


def main(argv=None) -> int:
    args = parse_args(argv)

    def measure() -> int:
        report = benchmark(args)
        table = markdown(report["results"], report["meta"])
        print(table, end="")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
        args.out.with_suffix(".md").write_text(table)
        return 0

    return run_cli(measure)


if __name__ == "__main__":
    sys.exit(main())
