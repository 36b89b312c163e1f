"""What the SpeeD study's scores look like: the final samples of each named method side by side,
from the same noise, beside real images.

    python benchmarks/speedup_samples.py --backbone unet --runs RUNS     # after (part of) the study

For each named method's seed-0 run (at its chosen learning rate once chosen, as
`speedup_regions.py` picks it), the first `--per-class` images of every class among the
`final_samples` images its last checkpoint drew for the final score (the same per-image noise and
classes in every run, so a column is one starting noise across methods), and as many real images
of each class from the study's reference set. One panel each, titled with the run's final domain
and Inception FID. Writes benchmarks/results/speedup_<backbone>_samples.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from speedup_plan import PLANS, RESULTS
from speedup_regions import study_seed0_runs
from speedup_scoring import final_samples as final_samples_path

from evaluations.cli import run
from evaluations.image_io import load_npz
from speed.run import RunDir
from speed.utils.images import make_grid


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(PLANS), default="unet")
    parser.add_argument("--runs", type=Path, required=True, help="the study's --runs folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--per-class", type=int, default=8, help="images of each class")
    return parser.parse_args(argv)


def class_rows(images: np.ndarray, labels: np.ndarray, per_class: int) -> np.ndarray:
    """The first `per_class` images of each class in label order, class after class
    [classes * per_class, H, W, C]; refuses a class with fewer images."""
    rows = []
    for c in np.unique(labels):
        picked = np.flatnonzero(labels == c)[:per_class]
        if len(picked) < per_class:
            raise SystemExit(f"error: class {c} has {len(picked)} images, fewer than --per-class")
        rows.append(images[picked])
    return np.concatenate(rows)


def samples(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan, sweep, records, chosen = study_seed0_runs(args.backbone, args.runs, args.results)
    real = load_npz(args.runs / f"reference_{plan.num_reference}.npz")
    panels = [("real images", class_rows(real.images, real.labels, args.per_class))]
    for method, (study_run, lr, _) in chosen.items():
        drawn = load_npz(
            final_samples_path(plan, RunDir(study_run.sweep_run.run_dir(sweep.sweep_dir)))
        )
        final = records[study_run.name]["final"]
        title = (
            f"{method}, lr {lr:g}\ndomain FID {final['domain']['fid']:.1f}, "
            f"Inception FID {final['inception']['fid']:.1f}"
        )
        panels.append((title, class_rows(drawn.images, drawn.labels, args.per_class)))

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.4))
    for ax, (title, images) in zip(axes, panels):
        ax.imshow(make_grid(images, nrow=args.per_class), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(
        f"SpeeD study ({args.backbone}): final samples, seed 0, step {plan.steps}, "
        f"one class per row, one noise per column",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    out = args.results / f"speedup_{args.backbone}_samples.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run(lambda: samples(args))


if __name__ == "__main__":
    raise SystemExit(main())
