"""Where does the loss per t stop changing? The held-out loss per tenth of t of a study's runs: at
the end of every run (a record field, `score.region_images`) and, with this command, at every
checkpoint of each method's first-seed run: the measurement behind SpeeD's "convergence area".

    python -m speed.study.regions studies/speed_unet.yaml [--methods A B] [--images 2000]

SpeeD (Wang et al. 2024, sec. 3) splits the timesteps by how their training loss behaves: for large
t it falls to a floor early and then barely moves (the convergence area, t >= tau; the paper's
tau = 700 for the linear schedule), below tau it keeps falling. The probe measures that split on
the study's models instead of assuming it: the EMA model of each checkpoint, unweighted eps-MSE on
held-out real images, timesteps spread evenly over [0, T), the same images, timesteps and noise
for every checkpoint and run. Per tenth it reports the loss at each checkpoint as a ratio to the
run's last one and the first checkpoint from which it stays within `--tolerance` (default 5%) of
it: a tenth that settles within the first quarter of training behaves as the convergence area.

How far from converged is a tenth? For large t, x_t says almost nothing about the image, and a
closed-form predictor sets a bound: predicting x0 by the mean image of the class, E[x0 | y],
gives eps-MSE = SNR_t * Var(x0 | y) (per pixel; SNR_t = abar_t / (1 - abar_t)), so the optimal
loss lies at or below it. A model above this bound is provably not converged there. Pixel-space
studies only. Writes `<report>_regions.{json,md,png}` beside the study's report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

from speed.config import load_config
from speed.diffusion.timesteps import loss_by_region
from speed.errors import run_cli
from speed.experiments.export_reference import export_reference
from speed.run import RunDir
from speed.runners.build import (
    build_autoencoder,
    build_diffusion,
    build_reference_dataset,
    build_sampling_model,
)
from speed.study.plan import final_step, machine, open_study, probed_or_refuse, setting_text


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study file")
    parser.add_argument("--runs", type=Path, default=None, help="its runs folder, if moved")
    parser.add_argument("--methods", nargs="+", default=None, help="default: the tuned ones")
    parser.add_argument("--images", type=int, default=2000, help="held-out images per probe")
    parser.add_argument("--tolerance", type=float, default=0.05, help="settled: within this")
    parser.add_argument("--bound-images", type=int, default=10000, help="for the class means")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    return parser.parse_args(argv)


@torch.inference_mode()
def region_losses(config: Path, words: list[str], num_images: int, seed: int = 1234) -> dict:
    """Unweighted eps-MSE of the run's final EMA model per tenth of [0, T) on real images: the
    same images, timesteps (evenly spread over [0, T), shuffled) and noise for every run, so the
    numbers compare methods directly."""
    cfg = load_config(config, "inference", words)
    autoencoder = build_autoencoder(cfg)
    model, _, _ = build_sampling_model(cfg, autoencoder, torch.device("cpu"))
    diffusion = build_diffusion(cfg)
    dataset = build_reference_dataset(cfg)
    images, labels = export_reference(dataset, num_images, seed=seed)
    channels = int(dataset.num_channels)
    x = torch.from_numpy(images[..., :channels]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    y = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_images) * diffusion.num_timesteps // num_images
    t = t[torch.randperm(num_images, generator=generator)]
    noise = torch.randn(x.shape, generator=generator)
    mse = torch.cat(
        [
            diffusion.training_losses(
                model, x[i : i + 128], t[i : i + 128], {"y": y[i : i + 128]}, noise[i : i + 128]
            )["mse"]
            for i in range(0, num_images, 128)
        ]
    )
    return loss_by_region(t, mse, diffusion.num_timesteps)


def settled_step(trajectory: dict[int, float], tolerance: float) -> int:
    """The first step from which every later loss lies within `tolerance` (relative) of the
    last one."""
    steps = sorted(trajectory)
    final = trajectory[steps[-1]]
    settled = steps[-1]
    for step in reversed(steps):
        if abs(trajectory[step] / final - 1) > tolerance:
            break
        settled = step
    return settled


def class_mean_bound(config: Path, words: list[str], num_images: int) -> dict[str, float]:
    """Per tenth of t: the mean over its timesteps of SNR_t * Var(x0 | y), the eps-MSE of
    predicting x0 by its class's mean image (per pixel, images in [-1, 1], classes weighted by
    their share of `num_images` real images)."""
    cfg = load_config(config, "inference", words)
    images, labels = export_reference(build_reference_dataset(cfg), num_images, seed=0)
    x = images[..., :1].astype(np.float64) / 127.5 - 1.0
    variance = sum(
        np.mean(labels == c) * x[labels == c].var(axis=0).mean() for c in np.unique(labels)
    )
    abar = torch.from_numpy(np.asarray(build_diffusion(cfg).alphas_cumprod, dtype=np.float64))
    t = torch.arange(len(abar))
    return loss_by_region(t, abar / (1 - abar) * variance, len(abar))


def trajectories(study, sweep, probed: dict, images: int) -> dict[str, dict[int, dict]]:
    """method -> checkpoint step -> {tenth: loss}."""
    out = {}
    for method, (study_run, _, _) in probed.items():
        run_dir = RunDir(study_run.run_dir(sweep))
        out[method] = {}
        for step in study.run_steps(final_step(study, run_dir.root)):
            words = study_run.words(sweep, [f"ckpt_path={run_dir.checkpoint(step)}"])
            out[method][step] = region_losses(study_run.sweep_run.config, words, images)
            print(f"{method} {step}: done", flush=True)
    return out


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"# Loss per tenth of t across training ({meta['study']})",
        "",
        f"Held-out eps-MSE of the EMA model at each checkpoint, {meta['images']} images "
        f"({meta['images'] // 10} a tenth), as a ratio to the same tenth at the run's last "
        f"checkpoint; 'settled' is the first checkpoint from which the loss stays within "
        f"{meta['tolerance']:.0%} of its last value. The class-mean bound: eps-MSE of predicting "
        f"x0 by the class's mean image, SNR_t Var(x0 | y), at or above the optimal loss; a ratio "
        f"above 1 means the model is not converged there. {meta['machine']}, {meta['date']}.",
        "",
        "| t | " + " | ".join(t.removeprefix("loss_t/") for t in result["class_mean_bound"]) + " |",
        "|---|" + "---:|" * len(result["class_mean_bound"]),
        "| class-mean bound | "
        + " | ".join(f"{v:.2e}" for v in result["class_mean_bound"].values())
        + " |",
    ]
    for method, info in result["runs"].items():
        steps = sorted(int(s) for s in info["losses"])
        tenths = list(info["losses"][str(steps[-1])])
        setting = setting_text(info["setting"])
        setting += "" if info["setting_chosen"] else " (not yet chosen)"
        lines += [
            "",
            f"## {method} ({setting}, first seed)",
            "",
            "| t | "
            + " | ".join(str(s) for s in steps)
            + " | last loss | settled at | last / class-mean bound |",
            "|---|" + "---:|" * (len(steps) + 3),
        ]
        for tenth in tenths:
            final = info["losses"][str(steps[-1])][tenth]
            ratios = " | ".join(f"{info['losses'][str(s)][tenth] / final:.2f}" for s in steps)
            label = tenth.removeprefix("loss_t/")
            bound = final / result["class_mean_bound"][tenth]
            lines.append(
                f"| {label} | {ratios} | {final:.2e} | {info['settled'][tenth]} | {bound:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Per method, loss / last loss against step, one line per tenth of t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["runs"])
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
    colors = plt.cm.viridis_r
    for ax, method in zip(axes[0], methods):
        losses = result["runs"][method]["losses"]
        steps = sorted(int(s) for s in losses)
        tenths = list(losses[str(steps[-1])])
        for k, tenth in enumerate(tenths):
            final = losses[str(steps[-1])][tenth]
            ax.plot(
                steps,
                [losses[str(s)][tenth] / final for s in steps],
                marker=".",
                color=colors(k / max(1, len(tenths) - 1)),
                label=f"t {tenth.removeprefix('loss_t/')}",
            )
        ax.axhline(1 + result["meta"]["tolerance"], color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss / loss at the last checkpoint")
        ax.set_title(f"{method}, {setting_text(result['runs'][method]['setting'])}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Held-out loss per tenth of t across training ({result['meta']['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def regions(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    study, sweep, runs, records = open_study(args.study, args.runs)
    probed = probed_or_refuse(study, runs, records, args.methods)
    losses = trajectories(study, sweep, probed, args.images)
    first = next(iter(probed.values()))[0]
    bound = class_mean_bound(first.sweep_run.config, first.words(sweep), args.bound_images)
    result = {
        "meta": {
            "study": study.name,
            "images": args.images,
            "tolerance": args.tolerance,
            "machine": machine(),
            "date": datetime.date.today().isoformat(),
            "bound_images": args.bound_images,
            "command": " ".join(["python -m speed.study.regions", *sys.argv[1:]]),
        },
        "class_mean_bound": bound,
        "runs": {
            method: {
                "setting": dict(setting),
                "setting_chosen": is_chosen,
                "losses": {str(step): losses[method][step] for step in losses[method]},
                "settled": {
                    tenth: settled_step(
                        {step: losses[method][step][tenth] for step in losses[method]},
                        args.tolerance,
                    )
                    for tenth in losses[method][max(losses[method])]
                },
            }
            for method, (_, setting, is_chosen) in probed.items()
        },
    }
    out = Path(f"{study.report}_regions")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    plot(result, out.with_suffix(".png"))
    print(table, end="")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: regions(args))


if __name__ == "__main__":
    raise SystemExit(main())
