"""Training throughput and memory: steps/s, images/s, peak memory and MFU of full training steps.

    python benchmarks/throughput.py                  # CPU: DiT-S/2 (batch 8, 32), DiT-B/2, ADM (8)
    python benchmarks/throughput.py --quick          # smoke run: DiT-S/2 at batch 8, 2 timed steps
    python benchmarks/throughput.py --device cuda    # the same plus DiT-XL/2 at batch 32, with MFU

A step is the train phase's: timesteps from the diffusion's timestep sampler, the loss of
`training_losses` (DiT's diffusion: linear schedule, learned sigma, MSE + VB), backward, AdamW.
Inputs are random SD-VAE latents of 256x256 images (32x32x4) with 1000 classes. Modes:
    fp32          eager, float32 (the baseline)
    bf16          autocast to bfloat16 (weights stay float32, as `precision=bf16`)
    compile       torch.compile of the model, float32 (`compile=true`)
    bf16+compile  both (on CUDA, attention then runs in SDPA's flash kernel)
    checkpoint    gradient checkpointing per block, float32 (`model.grad_checkpointing=true`)
"Optimized" is the fastest of bf16, compile and bf16+compile for each model and batch; the table
says whether it beats fp32 eager. On a CPU without bfloat16 kernels (no AVX512-BF16 / AMX) the
full run leaves the bf16 modes out (--quick still measures them once).

Each case runs in a fresh process, so its peak memory is its own: CUDA reports
torch.cuda.max_memory_allocated over the timed steps, CPU the process's peak resident set size
(ru_maxrss) and how far the steps raised it. FLOPs per step come from FlopCounterMode (forward +
backward: matmuls, convolutions and attention, without recomputation); MFU = FLOPs / (seconds x
the GPU's peak FLOP/s), on CPU the achieved GFLOP/s instead. Shape of nanoGPT's bench.py: build,
warm up, time, print a table, write benchmarks/results/throughput_<device>.{json,md,png}
(`cuda`, or `cpu_<isa>` such as `cpu_avx2`: 2-core boxes of different ISAs differ several-fold).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from models_forward import time_stage, written_out_attention
from torch.utils.flop_counter import FlopCounterMode

from speed.diffusion import create_diffusion
from speed.models import UNetModel, build_dit
from speed.runners.build import fused_kwargs
from speed.utils.machine import cpu_isa, load_average, run_header

RESULTS = Path(__file__).resolve().parent / "results"
LATENT_SHAPE = (4, 32, 32)  # SD-VAE latents of 256x256 images
NUM_CLASSES = 1000

# An ADM UNet for 32x32x4 latents with the DiT-B/2's cost (23.1 vs 23.0 GMACs per image):
# guided-diffusion's ImageNet choices (64-channel heads, scale-shift norm, resblock up/down) at
# LDM's latent widths.
ADM_LATENT_UNET = dict(
    model_channels=192,
    channel_mult=(1, 2, 4),
    num_res_blocks=2,
    attention_resolutions="16,8",
    num_head_channels=64,
    use_scale_shift_norm=True,
    resblock_updown=True,
)


def build_model(name: str, checkpointing: bool) -> torch.nn.Module:
    """A class-conditional, learned-sigma backbone for LATENT_SHAPE inputs."""
    channels, side = LATENT_SHAPE[0], LATENT_SHAPE[1]
    shared = dict(in_channels=channels, num_classes=NUM_CLASSES, grad_checkpointing=checkpointing)
    if name == "ADM-UNet":
        return UNetModel(
            image_size=side, learn_sigma=True, class_dropout_prob=0.1, **shared, **ADM_LATENT_UNET
        )
    return build_dit(name, input_size=side, **shared)


@dataclass(frozen=True)
class Mode:
    autocast: torch.dtype | None
    compile: bool
    checkpointing: bool


MODES = {
    "fp32": Mode(None, False, False),
    "bf16": Mode(torch.bfloat16, False, False),
    "compile": Mode(None, True, False),
    "bf16+compile": Mode(torch.bfloat16, True, False),
    "checkpoint": Mode(None, False, True),
}
OPTIMIZED_CANDIDATES = ("bf16", "compile", "bf16+compile")

# Dense peak FLOP/s per GPU (bf16 tensor cores, fp32 without tensor cores), from NVIDIA's data
# sheets; the first name contained in the device name wins.
PEAK_FLOPS = {
    "H100 PCIe": {"bf16": 756e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp32": 67e12},
    "H200": {"bf16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
}


@dataclass(frozen=True)
class Case:
    model: str
    batch_size: int
    mode: str


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (AVX512-BF16 or AMX); without them bf16
    matmuls are emulated (measured: 14x slower than fp32 on an AVX2 CPU)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def default_modes(device: str, quick: bool) -> list[str]:
    """All modes, but a full CPU run leaves out the bf16 ones where they are emulated (--quick
    still runs them once, so that the table shows why)."""
    if device == "cpu" and not quick and not cpu_has_native_bf16():
        return [m for m in MODES if MODES[m].autocast is None]
    return list(MODES)


def default_cases(device: str, quick: bool) -> list[Case]:
    """The default modes for each model and batch. CUDA adds DiT-XL/2 at the DiT paper's
    per-GPU batch (global 256 over 8 GPUs); a CPU leaves out batch 32 of the DiT-B/2-sized
    models (about 90 s a step on 2 cores; `--batch-sizes 8 32` runs them)."""
    if quick:
        pairs = [("DiT-S/2", 8)]
    else:
        pairs = [(m, b) for m in ("DiT-S/2", "DiT-B/2", "ADM-UNet") for b in (8, 32)]
        if device == "cuda":
            pairs.append(("DiT-XL/2", 32))
        else:
            pairs.remove(("DiT-B/2", 32))
            pairs.remove(("ADM-UNet", 32))
    return [Case(m, b, mode) for m, b in pairs for mode in default_modes(device, quick)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="DiT-S/2 at batch 8, 2 timed steps")
    parser.add_argument("--models", nargs="+", help="DiT names and/or ADM-UNet (default: all)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="default: 8 32")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), help="default: all")
    parser.add_argument("--warmup", type=int, help="untimed steps (default: cuda 2, cpu 1)")
    parser.add_argument("--repeats", type=int, help="timed steps (cuda 10, cpu 3, --quick 2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--peak-tflops",
        type=float,
        nargs=2,
        metavar=("BF16", "FP32"),
        help="GPU peak dense TFLOP/s, for a GPU whose name is not in PEAK_FLOPS",
    )
    parser.add_argument("--out", type=Path, help="default: results/throughput_{cuda,cpu_<isa>}")
    parser.add_argument("--note", default="", help="a remark saved with the results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one case, JSON
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # internal: its output
    args = parser.parse_args(argv)
    cpu = args.device == "cpu"  # seconds to minutes a step: fewer, still past the compilation
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick or cpu else 2)
    if args.repeats is None:
        args.repeats = 2 if args.quick else (3 if cpu else 10)
    suffix = args.device if args.device == "cuda" else f"cpu_{cpu_isa()}"
    args.out = args.out or RESULTS / f"throughput_{suffix}"
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be >= 1 (compilation happens in the warm-up)")
    return args


def selected_cases(args: argparse.Namespace) -> list[Case]:
    """The default cases, or the product of the --models, --batch-sizes and --modes given."""
    cases = default_cases(args.device, args.quick)
    if not (args.models or args.batch_sizes or args.modes):
        return cases
    models = args.models or list(dict.fromkeys(c.model for c in cases))
    batches = args.batch_sizes or list(dict.fromkeys(c.batch_size for c in cases))
    modes = args.modes or default_modes(args.device, args.quick)
    return [Case(m, b, mode) for m in models for b in batches for mode in modes]


# ---- one case, in its own process ----


def training_step(model, diffusion, optimizer, x, y, autocast_dtype):
    """A closure running one training step on latents x [N, C, H, W] with labels y [N]."""
    device = x.device

    def step() -> None:
        t, weights = diffusion.timestep_sampler.sample(x.shape[0], device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            terms = diffusion.training_losses(model, x, t, {"y": y}, weights=weights)
            loss = terms["loss"].mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def step_flops(model, diffusion, batch_size: int, device) -> float:
    """Forward + backward FLOPs of one training step: counted on one image (attention written out
    so that it is seen) and scaled by the batch, as every op is per image."""
    x = torch.randn(1, *LATENT_SHAPE, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)
    t = torch.full((1,), 500, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    model.eval()  # no recomputation: model FLOPs, not hardware FLOPs
    with counter, written_out_attention(model):
        diffusion.training_losses(model, x, t, {"y": y})["loss"].mean().backward()
    model.train().zero_grad(set_to_none=True)
    return counter.get_total_flops() * batch_size


def peak_rss_gb() -> float:
    """This process's peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(case: Case, device: torch.device, warmup: int, repeats: int) -> dict:
    """Time `repeats` training steps after `warmup` (the first one compiles); seconds per step,
    memory and FLOPs per step."""
    torch.manual_seed(0)
    mode = MODES[case.mode]
    model = build_model(case.model, mode.checkpointing).to(device).train()
    diffusion = create_diffusion("", learn_sigma=True)
    fused = fused_kwargs(torch.optim.AdamW, device)  # as the train phase
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, **fused)
    flops = step_flops(model, diffusion, case.batch_size, device)
    x = torch.randn(case.batch_size, *LATENT_SHAPE, device=device)
    y = torch.randint(0, NUM_CLASSES, (case.batch_size,), device=device)
    train_model = torch.compile(model) if mode.compile else model
    step = training_step(train_model, diffusion, optimizer, x, y, mode.autocast)

    rss_before = peak_rss_gb()
    warmup_s = time_stage(step, device, 0, warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_stage(step, device, 0, repeats)
    result = {
        **asdict(case),
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_step": flops,
        "warmup_s": warmup_s,
        "seconds": seconds,
    }
    if device.type == "cuda":
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        result["peak_mem_gb"] = peak_rss_gb()
        result["step_mem_gb"] = result["peak_mem_gb"] - rss_before
    return result


def run_worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is fp32, as the train phase's tf32: false
    torch.backends.cudnn.allow_tf32 = False
    case = Case(**json.loads(args.worker))
    result = measure(case, torch.device(args.device), args.warmup, args.repeats)
    args.result.write_text(json.dumps(result))


def run_case(case: Case, args: argparse.Namespace) -> dict:
    """`measure(case)` in a fresh Python process; a failure (e.g. out of memory) is recorded as
    {"error": its last line} instead of stopping the run."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        command = [
            sys.executable, __file__, "--worker", json.dumps(asdict(case)),
            "--result", str(result_path), "--device", args.device,
            "--threads", str(args.threads), "--warmup", str(args.warmup),
            "--repeats", str(args.repeats),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0 and result_path.is_file():
            return json.loads(result_path.read_text())
    lines = (done.stderr or done.stdout or f"exit status {done.returncode}").strip().splitlines()
    return {**asdict(case), "error": lines[-1] if lines else f"exit status {done.returncode}"}


# ---- summaries, table, plot ----


def peak_flops(device_name: str, override) -> dict | None:
    if override:
        return {"bf16": override[0] * 1e12, "fp32": override[1] * 1e12}
    for key, peak in PEAK_FLOPS.items():
        if key in device_name:
            return peak
    return None


def summarize(row: dict, peak: dict | None) -> dict:
    """Adds median seconds per step, steps/s, images/s, GFLOP/s and MFU (when the peak is known)."""
    if "error" in row:
        return row
    sec = statistics.median(row["seconds"])
    row.update(sec_per_step=sec, steps_per_s=1 / sec, images_per_s=row["batch_size"] / sec)
    row["gflops_per_s"] = row["flops_per_step"] / sec / 1e9
    if peak is not None:
        precision = "bf16" if MODES[row["mode"]].autocast is not None else "fp32"
        row["mfu"] = row["flops_per_step"] / sec / peak[precision]
    return row


def optimized_paths(rows: list[dict]) -> list[dict]:
    """Per (model, batch): fp32 eager against the fastest of OPTIMIZED_CANDIDATES."""
    groups: dict[tuple, dict] = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault((row["model"], row["batch_size"]), {})[row["mode"]] = row
    paths = []
    for (model, batch), modes in groups.items():
        candidates = [modes[m] for m in OPTIMIZED_CANDIDATES if m in modes]
        if "fp32" not in modes or not candidates:
            continue
        best = min(candidates, key=lambda r: r["sec_per_step"])
        speedup = modes["fp32"]["sec_per_step"] / best["sec_per_step"]
        paths.append(
            {
                "model": model,
                "batch_size": batch,
                "mode": best["mode"],
                "fp32_images_per_s": modes["fp32"]["images_per_s"],
                "images_per_s": best["images_per_s"],
                "speedup": speedup,
                "beats_fp32": speedup > 1.0,
            }
        )
    return paths


def markdown(rows: list[dict], paths: list[dict], meta: dict) -> str:
    cuda = meta["device_type"] == "cuda"
    kind = "QUICK (preliminary) run" if meta["quick"] else "run"
    lines = [
        f"# Training throughput ({meta['device']}, {meta['threads']} threads; {kind})",
        "",
        f"One training step = diffusion loss (learned sigma) + backward + AdamW on random "
        f"{'x'.join(map(str, LATENT_SHAPE))} latents. Median of {meta['repeats']} timed steps "
        f"after {meta['warmup']} warm-up (the first compiles). torch {meta['torch']}, "
        f"{meta['date']}. Load average before/after: {meta['loadavg_before']} / "
        f"{meta['loadavg_after']}.",
        "",
    ]
    last = "MFU" if cuda else "GFLOP/s"
    mem = "peak mem GB (allocated)" if cuda else "peak RSS GB | steps +GB"
    lines += [
        f"| model | batch | mode | s/step | steps/s | img/s | {mem} | {last} | first step s |",
        "|---|---:|---|---:|---:|---:|---:|" + ("" if cuda else "---:|") + "---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            cells = 5 if cuda else 6
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['mode']} | failed: {r['error'][:80]} |"
                + " |" * (cells - 1)
            )
            continue
        memory = f"{r['peak_mem_gb']:.2f}" + ("" if cuda else f" | {r['step_mem_gb']:.2f}")
        rate = f"{r['mfu']:.1%}" if "mfu" in r else f"{r['gflops_per_s']:.1f}"
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['mode']} | {r['sec_per_step']:.3f} | "
            f"{r['steps_per_s']:.3g} | {r['images_per_s']:.3g} | {memory} | {rate} | "
            f"{r['warmup_s'][0]:.1f} |"
        )
    lines += [
        "",
        "Optimized path (fastest of bf16, compile, bf16+compile) against fp32 eager:",
        "",
        "| model | batch | fp32 img/s | optimized | img/s | speed-up | faster than fp32 eager |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for p in paths:
        lines.append(
            f"| {p['model']} | {p['batch_size']} | {p['fp32_images_per_s']:.3g} | {p['mode']} | "
            f"{p['images_per_s']:.3g} | {p['speedup']:.2f}x | "
            f"{'yes' if p['beats_fp32'] else 'NO'} |"
        )
    if meta.get("bf16_left_out"):
        lines += ["", "bf16 modes left out: this CPU has no bfloat16 kernels (see --quick)."]
    lines += ["", meta["memory_method"]]
    if meta["note"]:
        lines += ["", f"Note: {meta['note']}"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], meta: dict, path: Path) -> None:
    """Images/s and peak memory per mode, one group of bars per (model, batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    groups = list(dict.fromkeys((r["model"], r["batch_size"]) for r in ok))
    modes = [m for m in MODES if any(r["mode"] == m for r in ok)]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 1.6 * len(groups) + 3), 7), sharex=True)
    width = 0.8 / max(1, len(modes))
    for k, mode in enumerate(modes):
        by_group = {(r["model"], r["batch_size"]): r for r in ok if r["mode"] == mode}
        xs = [i + (k - (len(modes) - 1) / 2) * width for i, g in enumerate(groups) if g in by_group]
        present = [g for g in groups if g in by_group]
        axes[0].bar(xs, [by_group[g]["images_per_s"] for g in present], width, label=mode)
        axes[1].bar(xs, [by_group[g]["peak_mem_gb"] for g in present], width, label=mode)
    axes[0].set_ylabel("images / s")
    axes[1].set_ylabel("peak memory (GB)")
    axes[1].set_xticks(range(len(groups)), [f"{m}\nbatch {b}" for m, b in groups])
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    kind = ", quick run" if meta["quick"] else ""
    fig.suptitle(f"Training throughput, {meta['device']} ({meta['date']}{kind})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def memory_method(device: str) -> str:
    if device == "cuda":
        return (
            "Memory: torch.cuda.max_memory_allocated over the timed steps (weights, gradients, "
            "AdamW state, activations), each case in a fresh process. TF32 off (fp32 modes are "
            "true fp32, as the train phase's default tf32: false)."
        )
    return (
        "Memory: each case runs in a fresh process; peak RSS is its ru_maxrss (Python and torch "
        "included), steps +GB how far the training steps raised it above its peak before them "
        "(gradients, AdamW state, activations, compiled code)."
    )


def main() -> None:
    args = parse_args()
    if args.worker:
        run_worker(args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device; run on a GPU or use cpu")
    meta = run_header(
        args.device,
        args.threads,
        device_type=args.device,
        command=" ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]]),
        quick=args.quick,
        warmup=args.warmup,
        repeats=args.repeats,
        memory_method=memory_method(args.device),
        adm_unet=ADM_LATENT_UNET,
        note=args.note,
    )
    peak = peak_flops(meta["device"], args.peak_tflops) if args.device == "cuda" else None
    meta["peak_flops"] = peak
    cases = selected_cases(args)
    meta["bf16_left_out"] = not any(MODES[c.mode].autocast for c in cases) and not args.modes
    rows = []
    for case in cases:
        row = summarize(run_case(case, args), peak)
        rows.append(row)
        done = row.get("error") or f"{row['sec_per_step']:.3f} s/step"
        print(f"{case.model} batch {case.batch_size} {case.mode}: {done}", flush=True)
    meta["loadavg_after"] = load_average()
    paths = optimized_paths(rows)

    table = markdown(rows, paths, meta)
    print(table, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "results": rows, "optimized": paths}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(table)
    plot(rows, meta, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
