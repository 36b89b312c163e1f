"""Sampling speed against quality: wall time per image and FID of each sampler on a trained model.

    python benchmarks/sampling.py             # newest checkpoint of runs/animals, 256 images
    python benchmarks/sampling.py --quick     # 64 images, without DDPM-250
    python benchmarks/sampling.py --ckpt runs/animals/train/checkpoints/0002000.pt --num 1000
    python benchmarks/sampling.py --rows ddpm-100 "ddim-25 eta=0" pndm-10 --reference real.npz

Every setting (DDPM-250/100, DDIM-50, DDIM-25 with eta 0 and 1, Euler ancestral-25, PLMS-25,
PNDM-10/25, DPM-Solver++-20/10; `--rows` picks some by name) draws the same images: image i starts
from the inference phase's noise for (seed, i) with class i mod K, through
`speed.generation.generate` with classifier-free guidance (2.0, the demo's inference value). The
time is the wall time of all batches over the number of images, after an untimed warm-up call;
model calls are counted (a forward hook), per image. FID and class accuracy use the fast
domain-classifier features (`evaluations.domain_classifier`, trained once into
runs/domain_classifier.pt when missing) against real images of the run's dataset (or of
`--reference`, an .npz or image folder): FID-like, not comparable with Inception FID. The config is
the one saved beside the checkpoints (<run>/train/config.yaml). Shape of nanoGPT's bench.py: build,
warm up, time, print a table, write benchmarks/results/sampling.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evaluations.domain_classifier import DEFAULT_DOMAIN_PATH, ensure_domain_classifier
from evaluations.evaluate import FEATURE_KINDS, build_extractor, compute_metrics, source_stats
from evaluations.image_io import ImageSource, load_source
from speed.config import load_config
from speed.errors import run_cli
from speed.experiments.export_reference import export_reference
from speed.generation import generate
from speed.run import RunDir, latest_checkpoint
from speed.runners.build import (
    build_autoencoder,
    build_dataset,
    build_diffusion,
    build_sampling_model,
)
from speed.runners.inference import SAMPLER_STREAM, image_noise, sample_labels
from speed.utils.images import to_uint8
from speed.utils.machine import load_average, run_header
from speed.utils.seeding import derived_seed

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_RUN = RunDir(Path("runs/animals"))
# (sampler, steps, sampler options); the first is left out by --quick.
SETTINGS = [
    ("ddpm", 250, {}),
    ("ddpm", 100, {}),
    ("ddim", 50, {}),
    ("ddim", 25, {"eta": 0.0}),
    ("ddim", 25, {"eta": 1.0}),  # stochastic DDIM: fresh noise each step, as the demo's grids
    ("euler_ancestral", 25, {}),
    ("plms", 25, {}),
    ("pndm", 10, {}),
    ("pndm", 25, {}),
    ("dpm_solver++", 20, {}),
    ("dpm_solver++", 10, {}),
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="default: newest of runs/animals/train")
    parser.add_argument("--num", type=int, help="images per setting (default 256; --quick 64)")
    parser.add_argument("--quick", action="store_true", help="64 images, no DDPM-250")
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=128, help="images per sampler call")
    parser.add_argument("--num-reference", type=int, default=2000, help="real images for FID")
    parser.add_argument("--reference", type=Path, help="real images (.npz or folder) for FID")
    parser.add_argument("--rows", nargs="+", help="settings to run, by name (e.g. pndm-10)")
    parser.add_argument(
        "--trust-checkpoint", action="store_true", help="unpickle a checkpoint with non-tensors"
    )
    parser.add_argument("--features", default="domain", choices=FEATURE_KINDS)
    parser.add_argument("--domain-path", type=Path, default=DEFAULT_DOMAIN_PATH)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS / "sampling")
    parser.add_argument("--note", default="", help="a remark saved with the results")
    args = parser.parse_args(argv)
    args.num = args.num or (64 if args.quick else 256)
    if args.num < 2 or args.batch_size < 1:
        parser.error("--num must be >= 2 (FID needs two images) and --batch-size >= 1")
    return args


def settings(quick: bool, rows: list[str] | None = None) -> list[tuple[str, int, dict]]:
    """The settings to run: all (without DDPM-250 when `quick`), or those named in `rows`."""
    if rows is None:
        return SETTINGS[1:] if quick else SETTINGS
    names = {setting_name(*setting): setting for setting in SETTINGS}
    unknown = [row for row in rows if row not in names]
    if unknown:
        raise ValueError(f"--rows: unknown {unknown}; choose from {list(names)}")
    return [names[row] for row in rows]


def setting_name(sampler: str, num_steps: int, options: dict) -> str:
    """e.g. 'ddim-25', 'ddim-25 eta=1', 'dpm_solver++-10 grid=time_uniform'."""
    shown = (f"{k}={v:g}" if isinstance(v, float | int) else f"{k}={v}" for k, v in options.items())
    return " ".join([f"{sampler}-{num_steps}", *shown])


# ---- sampling ----


def time_sampler(
    model, diffusion, autoencoder, noise, labels, sampler, num_steps, *, batch_size, seed, **kw
) -> tuple[np.ndarray, float]:
    """All images of one setting (uint8 [N, H, W, C]) and the wall seconds they took.

    noise [N, C, h, w] and labels [N] (or None) are split into batches of `batch_size`; batch b's
    sampler randomness is seeded by (seed, b) as in the inference phase. kw: `generate`'s options.
    """
    images, seconds = [], 0.0
    device = noise.device
    for b, start in enumerate(range(0, len(noise), batch_size)):
        rows = slice(start, start + batch_size)
        generator = torch.Generator(device).manual_seed(derived_seed(seed, SAMPLER_STREAM, b))
        tic = time.perf_counter()
        out = generate(
            model,
            diffusion,
            autoencoder,
            noise[rows],
            None if labels is None else labels[rows],
            sampler=sampler,
            num_steps=num_steps,
            generator=generator,
            **kw,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - tic
        images.append(to_uint8(out))
    return np.concatenate(images), seconds


def run_settings(model, diffusion, autoencoder, noise, labels, chosen, **kw) -> list[dict]:
    """Per setting: its name, sampler, steps, seconds per image, and the images (uint8)."""
    generate(
        model,
        diffusion,
        autoencoder,
        noise[:2],
        None if labels is None else labels[:2],
        sampler="ddim",
        num_steps=2,
        guidance_scale=kw["guidance_scale"],
    )
    rows, calls = [], []
    hook = model.register_forward_pre_hook(lambda *_: calls.append(1))
    batches = -(-len(noise) // kw["batch_size"])
    for sampler, num_steps, options in chosen:
        calls.clear()
        images, seconds = time_sampler(
            model, diffusion, autoencoder, noise, labels, sampler, num_steps, **kw, **options
        )
        name = setting_name(sampler, num_steps, options)
        print(f"{name}: {seconds / len(images):.4f} s/image", flush=True)
        rows.append(
            dict(
                setting=name,
                sampler=sampler,
                num_steps=num_steps,
                model_calls=len(calls) // batches,
                sec_per_image=seconds / len(images),
                images=images,
            )
        )
    hook.remove()
    return rows


# ---- quality ----


def score(rows: list[dict], reference, extractor, labels) -> None:
    """Adds "fid" (and "class_accuracy" when the extractor classifies labels) to every row."""
    which = ("fid", "class_accuracy") if extractor.classifies_dataset_labels else ("fid",)
    for row in rows:
        samples = ImageSource(path=row["setting"], images=row["images"], labels=labels)
        metrics = compute_metrics(reference, samples, extractor, which, progress=False)
        row["fid"] = metrics["fid"]["value"]
        if "class_accuracy" in metrics:
            row["class_accuracy"] = metrics["class_accuracy"].get("value")


# ---- report ----


def markdown(rows: list[dict], meta: dict) -> str:
    kind = "QUICK (preliminary) run" if meta["quick"] else "run"
    lines = [
        f"# Sampling speed vs quality ({meta['device']}, {meta['threads']} threads; {kind})",
        "",
        f"Checkpoint `{meta['checkpoint']}` ({meta['params'] / 1e6:.2f}M params, "
        f"{meta['side']}x{meta['side']}x{meta['channels']} inputs), {meta['num']} images per "
        f"setting (same noise and classes for all), guidance {meta['guidance_scale']}, batch "
        f"{meta['batch_size']}. FID against {meta['reference']} with "
        f"{meta['features']} features ({meta['extractor_note']}). torch {meta['torch']}, "
        f"{meta['date']}. Load average before/after: {meta['loadavg_before']} / "
        f"{meta['loadavg_after']}.",
        "",
        "| sampler | model calls | s/image | images/s | FID | class accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        accuracy = r.get("class_accuracy")
        lines.append(
            f"| {r['setting']} | {r['model_calls']} | {r['sec_per_image']:.4f} | "
            f"{1 / r['sec_per_image']:.1f} | {r['fid']:.2f} | "
            f"{'-' if accuracy is None else f'{accuracy:.3f}'} |"
        )
    lines += [
        "",
        "Model calls are per image, counted (PLMS and PNDM make more than their steps); with",
        "guidance each call evaluates the conditional and unconditional branch in one doubled",
        "batch. DPM-Solver++ uses the logSNR-uniform grid.",
    ]
    if meta["note"]:
        lines += ["", f"Note: {meta['note']}"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], meta: dict, path: Path) -> None:
    """FID against seconds per image (log axis), one labelled point per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in rows:
        ax.scatter(r["sec_per_image"], r["fid"], color="tab:blue")
        ax.annotate(
            r["setting"],
            (r["sec_per_image"], r["fid"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=9,
        )
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image")
    ax.set_ylabel(f"FID ({meta['features']} features, {meta['num']} images)")
    ax.set_title(f"Sampling speed vs quality ({meta['date']})\n{meta['device']}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- main ----


def checkpoint_and_config(ckpt: Path | None) -> tuple[Path, Path]:
    """The checkpoint (default: newest of the demo run) and the config saved beside it."""
    if ckpt is None:
        ckpt = latest_checkpoint(DEFAULT_RUN.checkpoints)
        if ckpt is None:
            raise FileNotFoundError(
                f"no checkpoint in {DEFAULT_RUN.checkpoints}; run `make demo` or pass --ckpt"
            )
    if not ckpt.is_file():
        raise FileNotFoundError(f"--ckpt {ckpt}: no such file")
    config = RunDir(ckpt.parent.parent.parent).config_file("train")
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: --ckpt must lie in <run>/train/checkpoints")
    return ckpt, config


def benchmark(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ckpt, config = checkpoint_and_config(args.ckpt)
    overrides = [f"ckpt_path={ckpt}", "data.random_flip=false"]
    if args.trust_checkpoint:
        overrides.append("trust_checkpoint=true")
    cfg = load_config(config, "inference", overrides)
    autoencoder = build_autoencoder(cfg).to(device)
    model, _, spec = build_sampling_model(cfg, autoencoder, device)
    diffusion = build_diffusion(cfg)
    domain_path = ensure_domain_classifier(args.domain_path) if args.features == "domain" else None
    extractor = build_extractor(args.features, domain_path=domain_path)
    if args.reference is None:
        images, real_labels = export_reference(build_dataset(cfg), args.num_reference, cfg.seed)
        reference = ImageSource(
            path=f"{args.num_reference} real images", images=images, labels=real_labels
        )
    else:
        reference = load_source(args.reference)
    reference_name = f"{len(reference)} real images" + (
        f" ({args.reference})" if args.reference else ""
    )
    reference = source_stats(reference, extractor, progress=False)

    meta = run_header(
        args.device,
        args.threads,
        command=" ".join(["python", "benchmarks/sampling.py", *sys.argv[1:]]),
        quick=args.quick,
        checkpoint=str(ckpt),
        params=sum(p.numel() for p in model.parameters()),
        channels=spec.channels,
        side=spec.side,
        num=args.num,
        guidance_scale=args.guidance_scale,
        batch_size=args.batch_size,
        reference=reference_name,
        features=args.features,
        extractor_note=extractor.name,
        seed=cfg.seed,
        note=args.note,
    )
    noise = image_noise(spec.channels, spec.side, cfg.seed, range(args.num)).to(device)
    labels = sample_labels(cfg, spec.num_classes, args.num)
    labels = None if labels is None else torch.from_numpy(labels).to(device)
    rows = run_settings(
        model,
        diffusion,
        autoencoder,
        noise,
        labels,
        settings(args.quick, args.rows),
        batch_size=args.batch_size,
        seed=cfg.seed,
        guidance_scale=args.guidance_scale,
        clip_denoised=cfg.clip_denoised,
    )
    meta["loadavg_after"] = load_average()
    score(rows, reference, extractor, None if labels is None else labels.cpu().numpy())
    for row in rows:
        del row["images"]

    table = markdown(rows, meta)
    print(table, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    args.out.with_suffix(".md").write_text(table)
    plot(rows, meta, args.out.with_suffix(".png"))
    return 0


def main() -> int:
    args = parse_args()
    return run_cli(lambda: benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
