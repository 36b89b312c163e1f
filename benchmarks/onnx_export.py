"""ONNX Runtime against PyTorch on the CPU: images per second of an exported denoiser.

    python main.py -c configs/image/animals/base.yaml -p export    # runs/animals/export/
    python benchmarks/onnx_export.py                               # its newest checkpoint
    python benchmarks/onnx_export.py --run /tmp/export-demo-run --trust-checkpoint

Two stages, each on the same inputs for both runtimes, with classifier-free guidance 2 folded in
(one guided call = the network on a batch of 2B):
  denoiser   one guided model call on a batch of B images (random x, t spread over 0..999)
  ddim-25    DDIM with 25 steps and eta 0 (`speed.generation.generate` against
             `speed.deploy.onnx_sampling.ddim_sample`) from the same noise; the largest pixel
             difference between the two sets of images is reported too.
Both runtimes use the same number of threads. Each stage warms up once per runtime, then
alternates the runtimes for `--repeats` timed rounds (so a background load hits both alike) and
keeps the median. Shape of nanoGPT's bench.py: build, warm up, time, print a table, write
benchmarks/results/onnx_export.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from speed.deploy.onnx_graph import DenoiserGraph
from speed.deploy.onnx_sampling import OnnxDenoiser, ddim_sample
from speed.generation import generate, grid_noise
from speed.run import RunDir, latest_checkpoint
from speed.runners.build import build_autoencoder, build_diffusion, build_sampling_model
from speed.utils.machine import load_average, run_header

RESULTS = Path(__file__).resolve().parent / "results"
GUIDANCE = 2.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/animals"), help="experiment_dir")
    parser.add_argument("--batch-size", type=int, default=64, help="images per call")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps of the sampling stage")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per runtime")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--trust-checkpoint", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_export")
    parser.add_argument("--note", default="", help="a remark saved with the results")
    return parser.parse_args(argv)


def timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def alternate(runs: dict, repeats: int) -> dict:
    """Median seconds of each callable in `runs` after one untimed call each, timed in turns."""
    for fn in runs.values():
        fn()
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            seconds[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in seconds.items()}


def load(args):
    """(cfg, EMA model, autoencoder, diffusion, spec, ONNX denoiser) of the run's newest
    checkpoint."""
    run = RunDir(args.run)
    cfg = run.saved_config("train")
    ckpt = latest_checkpoint(run.checkpoints)
    onnx_path = run.onnx_file(ckpt.stem)
    if not onnx_path.is_file():
        sys.exit(f"error: no {onnx_path}; export it first: python main.py -c CONFIG -p export")
    cfg.ckpt_path, cfg.trust_checkpoint = str(ckpt), args.trust_checkpoint
    autoencoder = build_autoencoder(cfg)
    model, _, spec = build_sampling_model(cfg, autoencoder, torch.device("cpu"))
    session = OnnxDenoiser(onnx_path, threads=args.threads)
    return cfg, model, autoencoder, build_diffusion(cfg), spec, session


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, model, autoencoder, diffusion, spec, session = load(args)
    b = args.batch_size
    meta = run_header("cpu", args.threads, onnxruntime=__import__("onnxruntime").__version__)
    meta |= {
        "model": f"{cfg.model._target_} ({sum(p.numel() for p in model.parameters()):,} params)",
        "batch_size": b,
        "guidance_scale": GUIDANCE,
        "note": args.note,
    }

    # ---- denoiser: one guided call on B images ----
    graph = DenoiserGraph(model)
    inputs = graph.example_inputs(b, spec.channels, spec.side)
    arrays = [i.numpy() for i in inputs]
    with torch.no_grad():
        call = alternate(
            {"pytorch": lambda: graph(*inputs), "onnxruntime": lambda: session(*arrays)},
            args.repeats,
        )

    # ---- ddim: a grid of B images from the same noise ----
    classes = spec.num_classes or 1
    noise = grid_noise(spec, rows=classes, seeds=-(-b // classes), seed=0, device="cpu")[:b]
    labels = torch.arange(b) % spec.num_classes if spec.num_classes else None
    options = {"num_steps": args.steps, "guidance_scale": GUIDANCE, "clip_denoised": True}
    out = {}

    def torch_ddim():
        out["pytorch"] = generate(
            model, diffusion, autoencoder, noise, labels, sampler="ddim", **options
        ).numpy()

    def onnx_ddim():
        y = None if labels is None else labels.numpy()
        out["onnxruntime"] = ddim_sample(session, noise.numpy(), y, **options)

    sampling = alternate({"pytorch": torch_ddim, "onnxruntime": onnx_ddim}, args.repeats)
    meta["loadavg_after"] = load_average()

    # ---- report ----
    rows = [
        {
            "stage": stage,
            "pytorch_images_per_s": b / seconds["pytorch"],
            "onnxruntime_images_per_s": b / seconds["onnxruntime"],
            "speedup": seconds["pytorch"] / seconds["onnxruntime"],
        }
        for stage, seconds in (("denoiser", call), (f"ddim-{args.steps}", sampling))
    ]
    meta["ddim_max_abs_diff"] = float(np.abs(out["pytorch"] - out["onnxruntime"]).max())
    lines = [
        "| stage | PyTorch images/s | ONNX Runtime images/s | ORT / PyTorch |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['stage']} | {r['pytorch_images_per_s']:.1f} | "
            f"{r['onnxruntime_images_per_s']:.1f} | {r['speedup']:.2f}x |"
            for r in rows
        ),
    ]
    caption = (
        f"{meta['model']}, batch {b}, guidance {GUIDANCE:g} folded in, {meta['device']}, "
        f"{args.threads} threads, torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, "
        f"{meta['date']}; load average before/after {meta['loadavg_before'][0]:.1f} / "
        f"{meta['loadavg_after'][0]:.1f}; median of {args.repeats} alternating rounds. DDIM images "
        f"of the two runtimes differ by at most {meta['ddim_max_abs_diff']:.1e}. {args.note}"
    )
    table = "\n".join(lines)
    print(f"{table}\n\n{caption}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(f"{table}\n\n{caption.strip()}\n")


if __name__ == "__main__":
    main()
