"""Does the text steer the offline text-to-image demo, held-out pairs included, and does SpeeD
make it learn sooner?

The demo (configs/image/animals_text/base.yaml: a PixArt DiT with a byte-level text transformer
on two animal-mnist silhouettes side by side, ten ordered pairs never trained) is trained with
uniform t (`baseline`) and with SpeeD's released variant (`speed_released`: tanh timestep
sampling and P2 weights, the fastest in the project's DiT study, studies/results/speed_dit.md),
for each seed. Every checkpoint draws `--samples` images over the 20 prompts of
configs/image/animals_text/eval_prompts.txt (10 seen pairs, then the 10 held-out ones; DDIM-25,
eta 1, guidance 3: the config's sampler) and is scored by `evaluations.text_alignment`: pair
accuracy, the share of images whose left and right halves the domain classifier reads as the
prompt's animals (chance 0.01; real composed pairs 0.91). It made the records of the configs the
docs compare (base.yaml, unet.yaml, unet_full.yaml, words*.yaml); the three-seed comparison of
demo.yaml runs through the study command instead (studies/text_demo.yaml), which scores the
same alignment and the FID of the pair images.

    python benchmarks/text_demo.py                          # resumes: finished work is kept
    python benchmarks/text_demo.py --seeds 0 1 2 --steps 4800 --every 1200
    python benchmarks/text_demo.py --config configs/image/animals_text/unet.yaml  # the UNet

Writes benchmarks/results/text_demo.{json,md} (another config: text_demo_<its name>.*, its runs in
runs/text_demo_<its name>), keeping the runs an earlier command recorded there that this one did
not redo (each with its own command, machine and date), text_demo.png (pair accuracy against
training step, seen and held-out, seed mean and spread) and text_demo_samples.png (the last
checkpoint of each method whose images are here, first seed: one row per prompt of the first
four seen and four held-out pairs).
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

from speed.models import load_checkpoint
from speed.utils.images import make_grid, save_png, upscale
from speed.utils.machine import device_name

CONFIG = "configs/image/animals_text/base.yaml"
PROMPTS = "configs/image/animals_text/eval_prompts.txt"
METHODS = {
    "baseline": [],  # the config as it is: uniform t, no weights
    "speed_released": ["diffusion.sampling=tanh", "diffusion.weighting=p2"],
}
SPLITS = ("seen", "held_out")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG, help="the demo config (e.g. its unet.yaml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--steps", type=int, default=4800, help="training steps of every run")
    parser.add_argument("--every", type=int, default=1200, help="checkpoint and score interval")
    parser.add_argument("--samples", type=int, default=400, help="images per checkpoint")
    parser.add_argument("--runs", type=Path, default=None, help="default: runs/text_demo[_name]")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/...")
    parser.add_argument("--report", action="store_true", help="only rebuild the report")
    args = parser.parse_args(argv)
    name = "text_demo" + ("" if args.config == CONFIG else f"_{Path(args.config).stem}")
    args.runs = args.runs or REPO / "runs" / name
    args.out = args.out or REPO / "benchmarks/results" / name
    return args


def score(config: str, run: Path, step: int, samples: int) -> dict:
    """Pair alignment of `samples` images of the run's checkpoint at `step` (kept beside them)."""
    npz = run / f"inference/{step:07d}.npz"
    out = npz.with_suffix(".alignment.json")
    if not out.is_file():
        if not npz.is_file():
            main_py(
                config, "inference", f"experiment_dir={run}", f"prompts_file={PROMPTS}",
                f"num_samples={samples}", f"ckpt_path={run}/train/checkpoints/{step:07d}.pt",
            )  # fmt: skip
        command = [sys.executable, "-m", "evaluations.text_alignment", str(npz)]
        subprocess.run([*command, "--json", str(out)], check=True, cwd=REPO)
    return json.loads(out.read_text())["pairs"]


def collect(args) -> dict:
    """{method: {seed: {"train_seconds", "scores": {step: pairs}}}} for the finished work; with
    `--report` nothing is trained or scored."""
    results: dict = {}
    for seed in args.seeds:
        for method in args.methods:
            run = (args.runs / f"{method}_seed{seed}").resolve()
            if not args.report:
                overrides = [f"seed={seed}", f"max_training_steps={args.steps}"]
                overrides += [f"ckpt_every={args.every}", "sample_every=0", *METHODS[method]]
                train(args.config, run, *overrides)
            steps = range(args.every, args.steps + 1, args.every)
            scores = {}
            for step in steps:
                have = (run / f"inference/{step:07d}.alignment.json").is_file()
                if have or not args.report:
                    scores[step] = score(args.config, run, step, args.samples)
            if scores:
                last = run / f"train/checkpoints/{max(scores):07d}.pt"
                seconds = float(load_checkpoint(last).get("train_seconds", float("nan")))
                results.setdefault(method, {})[seed] = {"train_seconds": seconds, "scores": scores}
    return results


def recorded(path: Path) -> dict:
    """The results an earlier command wrote to `path` (none if absent), seeds and steps as ints,
    each run with its command, machine and date (a file from before runs carried their own: the
    file's)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    runs = {}
    for method, seeds in data["results"].items():
        for seed, run in seeds.items():
            run["scores"] = {int(step): pairs for step, pairs in run["scores"].items()}
            for key in ("command", "machine", "date"):
                run.setdefault(key, data[key])
            runs.setdefault(method, {})[int(seed)] = run
    return runs


def merged(old: dict, new: dict, provenance: dict, report: bool) -> dict:
    """`old` with every (method, seed) run of `new` put in its place, stamped with `provenance`
    (this command, machine, date) unless `report` finds the run recorded: it made nothing."""
    out = {method: dict(seeds) for method, seeds in old.items()}
    for method, seeds in new.items():
        for seed, run in seeds.items():
            before = out.get(method, {}).get(seed)
            keep = report and before is not None
            stamp = {k: before[k] for k in provenance} if keep else provenance
            out.setdefault(method, {})[seed] = {**run, **stamp}
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def markdown(meta: dict, results: dict) -> str:
    steps = sorted({s for m in results.values() for r in m.values() for s in r["scores"]})
    lines = [
        "# The text-to-image demo: does the text steer?",
        "",
        f"`{meta['command']}` (config `{meta['config']}`) on {meta['machine']}, {meta['date']}. "
        f"{meta['samples']} images per "
        f"checkpoint over the 20 prompts of {PROMPTS} (10 seen pairs, 10 held out); pair "
        "accuracy by the domain classifier (chance 0.01, real pairs 0.91); seed mean +- std "
        "(seeds in brackets).",
        "",
        "| method | split | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|---|" + "---:|" * len(steps),
    ]
    for method, runs in results.items():
        for split in SPLITS:
            cells = []
            for step in steps:
                values = [r["scores"][step][split]["pair_accuracy"] for r in runs.values()
                          if step in r["scores"]]  # fmt: skip
                mean, std = mean_std(values) if values else (float("nan"), 0.0)
                cells.append(f"{mean:.3f} +- {std:.3f} ({len(values)})" if values else "-")
            lines.append(f"| {method} | {split} | " + " | ".join(cells) + " |")
    lines += ["", "Each half alone (left / right accuracy, chance 0.1) at the last step:", ""]
    lines += ["| method | split | left | right | swapped |", "|---|---|---:|---:|---:|"]
    for method, runs in results.items():
        last = [r["scores"][max(r["scores"])] for r in runs.values()]
        for split in SPLITS:
            cells = [mean_std([s[split][k] for s in last])[0] for k in ("left_accuracy",
                     "right_accuracy", "swapped")]  # fmt: skip
            lines.append(f"| {method} | {split} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    seconds = {m: [r["train_seconds"] for r in runs.values()] for m, runs in results.items()}
    lines += ["", "Training seconds to the last step, per seed: " + "; ".join(
        f"{m} " + ", ".join(f"{s:.0f}" for s in v) for m, v in seconds.items()) + "."]  # fmt: skip
    lines += ["", "Runs:", ""] + [
        f"- {method} seed {seed}: `{run['command']}`, {run['machine']}, {run['date']}"
        for method, runs in results.items() for seed, run in sorted(runs.items())
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def curves(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    for ax, split in zip(figure.subplots(1, 2), SPLITS):
        for method, runs in results.items():
            steps = sorted({s for r in runs.values() for s in r["scores"]})
            values = [[r["scores"][s][split]["pair_accuracy"] for r in runs.values()
                       if s in r["scores"]] for s in steps]  # fmt: skip
            mean = np.array([np.mean(v) for v in values])
            std = np.array([np.std(v) for v in values])
            ax.plot(steps, mean, marker="o", label=method)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.axhline(0.01, color="grey", linestyle=":", label="chance")
        ax.set(title=f"{split} pairs", xlabel="training step", ylabel="pair accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def samples_picture(args, results: dict, path: Path) -> None:
    """Per method (first seed, last scored step) whose images are here: 4 seen then 4 held-out
    prompts, a row each. Without any, an earlier picture stays."""
    prompts = Path(REPO / PROMPTS).read_text().splitlines()
    rows = [*range(4), *range(10, 14)]
    tiles = []
    for method, runs in results.items():
        seed = min(runs)
        step = max(runs[seed]["scores"])
        npz = args.runs / f"{method}_seed{seed}/inference/{step:07d}.npz"
        if not npz.is_file():
            continue  # recorded by an earlier command on another checkout
        images = np.load(npz)["arr_0"]
        for row in rows:  # image i has prompt i mod P
            tiles += [images[i] for i in range(row, len(images), len(prompts))][:8]
    if tiles:
        save_png(upscale(make_grid(np.stack(tiles), nrow=8), 2), path)


def main(argv=None) -> int:
    args = parse_args(argv)
    provenance = {
        "command": " ".join(["python benchmarks/text_demo.py", *(argv or sys.argv[1:])]),
        "machine": f"{device_name()}, torch {torch.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    old = recorded(args.out.with_suffix(".json"))
    results = merged(old, collect(args), provenance, args.report)
    meta = {
        **provenance,
        "samples": args.samples,
        "config": args.config,
        "methods": {m: METHODS[m] for m in results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "results": results}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(meta, results))
    curves(results, args.out.with_suffix(".png"))
    samples_picture(args, results, args.out.with_name(args.out.name + "_samples.png"))
    print(markdown(meta, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
