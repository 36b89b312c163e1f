"""Do the deterministic samplers converge on a trained model? Distance of each sampler's images to
a many-step solution of the same probability-flow ODE, from the same noise.

    python benchmarks/ode_convergence.py                    # newest checkpoint of runs/animals
    python benchmarks/ode_convergence.py --ckpt RUN/train/checkpoints/0004000.pt --num 32

FID on a trained model mixes two errors: the solver's (how far its images are from the exact
solution of the ODE it integrates) and the model's (how far the ODE's images are from the data).
This script measures the first alone. Every sampler starts from the inference phase's noise for
image i (class i mod K, guidance as in sampling.py) and its decoded float images are compared with
those of DPM-Solver++ with `--reference-steps` steps (default 500), the solution taken as exact;
DDIM with as many steps is a second estimate of that solution; the two lie as far apart as their
errors differ, mostly DDIM's (first order against second). The distance is the root mean square
over pixels in the model's [-1, 1] range, with its spread over images. A solver that converges
on the model shows distances that fall with every step count. Same settings as the demo
(clip_denoised from the run's config). Writes benchmarks/results/ode_convergence.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sampling import checkpoint_and_config

from speed.config import load_config
from speed.errors import run_cli
from speed.generation import generate
from speed.runners.build import build_autoencoder, build_diffusion, build_sampling_model
from speed.runners.inference import image_noise, sample_labels
from speed.utils.machine import device_name

RESULTS = Path(__file__).resolve().parent / "results"
# (sampler, steps): the deterministic samplers at the step counts the field uses.
ROWS = [
    ("dpm_solver++", 10),
    ("dpm_solver++", 15),
    ("dpm_solver++", 20),
    ("dpm_solver++", 30),
    ("dpm_solver++", 50),
    ("pndm", 10),
    ("pndm", 25),
    ("ddim", 25),
    ("ddim", 50),
    ("ddim", 100),
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="default: newest of runs/animals/train")
    parser.add_argument("--num", type=int, default=32, help="images (default 32)")
    parser.add_argument("--reference-steps", type=int, default=500)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument(
        "--trust-checkpoint", action="store_true", help="unpickle a checkpoint with non-tensors"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS / "ode_convergence")
    args = parser.parse_args(argv)
    if args.num < 1 or args.reference_steps < 100:
        parser.error("--num must be >= 1 and --reference-steps >= 100")
    return args


def rms_distance(images: torch.Tensor, exact: torch.Tensor) -> np.ndarray:
    """Per image, the root mean square of the pixel differences [N]."""
    return (images - exact).double().pow(2).flatten(1).mean(1).sqrt().cpu().numpy()


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Deterministic samplers against the ODE's solution ({meta['device']})",
        "",
        f"Checkpoint `{meta['checkpoint']}`, {meta['num']} images (same noise and classes for "
        f"all), guidance {meta['guidance_scale']}, clip_denoised {meta['clip_denoised']}. "
        f"Exact solution: DPM-Solver++ with {meta['reference_steps']} steps; DDIM with as many "
        f"steps lies {meta['ddim_distance']:.2e} from it (mostly DDIM's own error). "
        f"torch {meta['torch']}, "
        f"{meta['date']}.",
        "",
        "| sampler | model calls | RMS distance to the solution | std over images |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['model_calls']} | {r['rms']:.2e} | {r['rms_std']:.2e} |"
        )
    lines += ["", "Distances in the model's [-1, 1] pixel range (one uint8 level is 7.8e-3)."]
    return "\n".join(lines) + "\n"


def convergence(
    model, diffusion, autoencoder, noise, labels, rows, *, reference_steps, **kw
) -> tuple[list[dict], float]:
    """Per (sampler, steps) of `rows`: its model calls per image and the mean and std over images
    of the RMS distance of its images to DPM-Solver++ with `reference_steps` steps; and the mean
    distance of DDIM with `reference_steps` steps to the same. kw: `generate`'s options."""
    calls = []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))

    def solve(sampler: str, num_steps: int) -> torch.Tensor:
        calls.clear()
        return generate(
            model, diffusion, autoencoder, noise, labels, sampler=sampler, num_steps=num_steps, **kw
        )

    exact = solve("dpm_solver++", reference_steps)
    ddim_distance = float(rms_distance(solve("ddim", reference_steps), exact).mean())
    results = []
    for sampler, num_steps in rows:
        distance = rms_distance(solve(sampler, num_steps), exact)
        results.append(
            dict(
                setting=f"{sampler}-{num_steps}",
                model_calls=len(calls),
                rms=float(distance.mean()),
                rms_std=float(distance.std()),
            )
        )
        print(f"{results[-1]['setting']}: {results[-1]['rms']:.2e}", flush=True)
    hook.remove()
    return results, ddim_distance


def benchmark(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ckpt, config = checkpoint_and_config(args.ckpt)
    overrides = [f"ckpt_path={ckpt}"] + (["trust_checkpoint=true"] if args.trust_checkpoint else [])
    cfg = load_config(config, "inference", overrides)
    autoencoder = build_autoencoder(cfg).to(device)
    model, _, spec = build_sampling_model(cfg, autoencoder, device)
    diffusion = build_diffusion(cfg)
    noise = image_noise(spec.channels, spec.side, cfg.seed, range(args.num)).to(device)
    labels = sample_labels(cfg, spec.num_classes, args.num)
    labels = None if labels is None else torch.from_numpy(labels).to(device)
    tic = time.perf_counter()
    rows, ddim_distance = convergence(
        model,
        diffusion,
        autoencoder,
        noise,
        labels,
        ROWS,
        reference_steps=args.reference_steps,
        guidance_scale=args.guidance_scale,
        clip_denoised=cfg.clip_denoised,
    )
    meta = {
        "device": device_name(args.device),
        "threads": args.threads,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/ode_convergence.py", *sys.argv[1:]]),
        "checkpoint": str(ckpt),
        "num": args.num,
        "guidance_scale": args.guidance_scale,
        "clip_denoised": cfg.clip_denoised,
        "reference_steps": args.reference_steps,
        "ddim_distance": ddim_distance,
        "seconds": round(time.perf_counter() - tic, 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }
    table = markdown(rows, meta)
    print(table, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    args.out.with_suffix(".md").write_text(table)
    return 0


def main() -> int:
    args = parse_args()
    return run_cli(lambda: benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
