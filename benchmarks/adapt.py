"""LoRA against full fine-tuning on a class the base model never saw.

The demo UNet (configs/image/animals/base.yaml) is trained on nine of the ten animal-mnist classes
(zebra held out: its label row is never trained), then adapted to zebras for the same number of
steps in two ways: LoRA (configs/image/animals/lora.yaml, rank 8 on the attention, timestep
projections and the label embedding) and a full fine-tune from the base weights. Each model
draws 256 zebras (DDIM-25, eta 1, guidance 2, the demo's sampler), scored by the domain
classifier against 1000 real zebras: FID and the share classified as zebra. The table gives the
trained parameters, the checkpoint size, steps, training seconds and the scores before and
after.

    python benchmarks/adapt.py                      # resumes: finished stages are kept
    python benchmarks/adapt.py --steps 500 --runs runs/adapt

Writes benchmarks/results/adapt.{json,md} and adapt_samples.png (the first 12 samples of each
model, one row each, then 12 real zebras).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from phases import REPO, main_py, train

from speed.data.animals import ANIMAL_CLASSES
from speed.models import load_checkpoint
from speed.utils.images import save_png, upscale
from speed.utils.machine import device_name

BASE_CONFIG = "configs/image/animals/base.yaml"
LORA_CONFIG = "configs/image/animals/lora.yaml"
HELD_OUT = "zebra"
SEEN = [c for c in range(len(ANIMAL_CLASSES)) if ANIMAL_CLASSES[c] != HELD_OUT]
NEW = ANIMAL_CLASSES.index(HELD_OUT)
DOMAIN = str(REPO / "benchmarks/assets/domain_classifier.pt")  # the studies' scorer
LORA_TARGETS = "[qkv,proj_out,emb_layers.1,label_emb]"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-steps", type=int, default=2000, help="the base run's (the demo's)")
    parser.add_argument("--steps", type=int, default=500, help="adaptation steps of both methods")
    parser.add_argument("--lr", type=float, default=1e-3, help="adaptation learning rate")
    parser.add_argument("--samples", type=int, default=256, help="zebras drawn per model")
    parser.add_argument("--runs", type=Path, default=REPO / "runs/adapt")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/adapt")
    return parser.parse_args(argv)


def zebras(config: str, run: Path, samples: int, *overrides: str) -> Path:
    """`samples` zebras from the run's last checkpoint (the inference phase's .npz)."""
    common = [f"experiment_dir={run}", f"num_samples={samples}", f"sample_classes=[{NEW}]"]
    main_py(config, "inference", *common, *overrides)
    return max((run / "inference").glob("*.npz"), key=lambda p: p.stat().st_mtime)


def score(reference: Path, samples: Path) -> dict:
    """Domain-classifier FID and class accuracy of `samples` against `reference`."""
    out = samples.with_suffix(".domain.json")
    if not out.is_file():
        command = [sys.executable, "-m", "evaluations.evaluator", str(reference), str(samples)]
        command += ["--features", "domain", "--domain", DOMAIN, "--device", "cpu"]
        command += ["--out", str(out), "--quiet"]
        subprocess.run(command, check=True, cwd=REPO)
    result = json.loads(out.read_text())
    return {name: result[name]["value"] for name in ("fid", "class_accuracy")}


def trained_parameters(ckpt: dict) -> int:
    return sum(t.numel() for t in ckpt["model"].values() if t.is_floating_point())


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = args.runs.resolve()
    seen = f"data.classes=[{','.join(map(str, SEEN))}]"
    base_steps = [f"max_training_steps={args.base_steps}", f"ckpt_every={args.base_steps}"]
    base = train(BASE_CONFIG, runs / "base", seen, *base_steps, "sample_every=0")
    reference = runs / "zebra_reference.npz"
    if not reference.is_file():
        command = [sys.executable, "-m", "speed.experiments.export_reference", "-c", BASE_CONFIG]
        command += ["--out", str(reference), "--num", "1000", f"data.classes=[{NEW}]"]
        subprocess.run(command, check=True, cwd=REPO)

    adapt = [
        f"data.classes=[{NEW}]",
        f"max_training_steps={args.steps}",
        f"ckpt_every={args.steps}",
        "sample_every=0",
        "warmup_steps=0",
        f"optimizer.lr={args.lr}",
    ]
    # (config, training overrides, sampling overrides): a full fine-tune starts from the base
    # weights (ckpt_path, which in a sampling phase would pick the checkpoint to sample).
    lora = [f"adapter.base={base}", f"adapter.target_modules={LORA_TARGETS}"]
    methods = {
        "full fine-tune": (BASE_CONFIG, [*adapt, f"ckpt_path={base}"], adapt[:1]),
        "LoRA r=8": (LORA_CONFIG, [*adapt, *lora], [*adapt[:1], *lora]),
    }
    base_ckpt = load_checkpoint(base)
    samples = [zebras(BASE_CONFIG, runs / "base", args.samples)]
    rows = [
        {
            "method": "base (zebra never seen)",
            "steps": 0,
            "trained_params": 0,
            "checkpoint_mb": base.stat().st_size / 2**20,
            "train_seconds": 0.0,
            **score(reference, samples[0]),
        }
    ]
    for name, (config, overrides, sampling) in methods.items():
        run = runs / name.split()[0].lower()
        last = train(config, run, *overrides)
        ckpt = load_checkpoint(last)
        samples.append(zebras(config, run, args.samples, *sampling))
        rows.append(
            {
                "method": name,
                "steps": int(ckpt["step"]),
                "trained_params": trained_parameters(ckpt),
                "checkpoint_mb": last.stat().st_size / 2**20,
                "train_seconds": float(ckpt["train_seconds"]),
                **score(reference, samples[-1]),
            }
        )
    meta = {
        "command": " ".join(["python benchmarks/adapt.py", *(argv or sys.argv[1:])]),
        "machine": f"{device_name()}, torch {torch.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "base": {"run": str(base), "steps": int(base_ckpt["step"]), "classes": SEEN},
        "adaptation": {"class": HELD_OUT, "steps": args.steps, "lr": args.lr},
        "samples": args.samples,
        "reference": "1000 real zebras (domain classifier features)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(meta, rows))
    picture([*samples, reference], args.out.with_name(args.out.name + "_samples.png"))
    print(markdown(meta, rows))
    return 0


def picture(npz_files: list[Path], path: Path, columns: int = 12) -> None:
    """One row per file: its first `columns` images, enlarged 3x."""
    rows = [np.concatenate(list(np.load(f)["arr_0"][:columns]), axis=1) for f in npz_files]
    save_png(upscale(np.concatenate(rows, axis=0), 3), path)


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# Adapting the demo UNet to a class it never saw ({meta['adaptation']['class']})",
        "",
        f"`{meta['command']}` on {meta['machine']}, {meta['date']}. Base: "
        f"{meta['base']['steps']} steps on the other nine classes; {meta['samples']} samples "
        "per model (DDIM-25, eta 1, guidance 2) against 1000 real zebras, domain-classifier "
        "features. Rows of adapt_samples.png: base, full fine-tune, LoRA, real zebras.",
        "",
        "| method | steps | trained params | checkpoint MB | train s | FID | zebra accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['trained_params']:,} | "
            f"{r['checkpoint_mb']:.2f} | {r['train_seconds']:.0f} | {r['fid']:.1f} | "
            f"{r['class_accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
