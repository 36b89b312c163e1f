"""What a study's scores look like: the final samples of each method's first-seed run side by side,
from the same noise, beside real images.

    python -m speed.study.samples studies/speed_unet.yaml [--methods A B ...] [--per-class 8]

For each method (default: the tuned ones) at its chosen setting once chosen, the first
`--per-class` images of every class among the images its last checkpoint drew for the final
scores (the same per-image noise and classes in every run, so a column is one starting noise
across methods), and as many real images of each class from the study's reference set. A
text-to-image study's samples have a row per prompt instead (in the order of its prompts file,
written beside the first panel), its real images none. One panel each, titled with the run's final
scores. Writes `<report>_samples.png`.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np

from evaluations.image_io import load_npz
from speed.errors import ConfigError, run_cli
from speed.run import RunDir
from speed.study.plan import open_study, probed_or_refuse, setting_text
from speed.study.scoring import final_samples
from speed.utils.images import make_grid


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study file")
    parser.add_argument("--runs", type=Path, default=None, help="its runs folder, if moved")
    parser.add_argument("--methods", nargs="+", default=None, help="default: the tuned ones")
    parser.add_argument("--per-class", type=int, default=8, help="images of each class")
    return parser.parse_args(argv)


def class_rows(images: np.ndarray, labels, per_class: int) -> np.ndarray:
    """The first `per_class` images of each class in label order (of each prompt in the order
    the prompts first appear), class after class [classes * per_class, H, W, C]; refuses a class
    with fewer images."""
    keys = list(dict.fromkeys(np.asarray(labels).tolist()))
    if all(isinstance(k, int) for k in keys):
        keys.sort()
    rows = []
    for c in keys:
        picked = [i for i, label in enumerate(labels) if label == c][:per_class]
        if len(picked) < per_class:
            raise ConfigError(f"class {c} has {len(picked)} images, fewer than --per-class")
        rows.append(images[picked])
    return np.concatenate(rows)


def samples(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study, sweep, runs, records = open_study(args.study, args.runs)
    probed = probed_or_refuse(study, runs, records, args.methods)
    panels, prompts = [], None
    for method, (study_run, setting, _) in probed.items():
        drawn = load_npz(final_samples(study, RunDir(study_run.run_dir(sweep))))
        final = records[study_run.name]["final"]
        scores = ", ".join(f"{kind} {m} {v:.3g}" for kind, values in final.items()
                           for m, v in values.items() if isinstance(v, float))  # fmt: skip
        title = f"{method}, {setting_text(setting)}\n" + textwrap.fill(scores, 38)
        keys = drawn.labels if drawn.prompts is None else drawn.prompts
        prompts = None if drawn.prompts is None else list(dict.fromkeys(drawn.prompts))
        panels.append((title, class_rows(drawn.images, keys, args.per_class)))
    if prompts is None:
        real = load_npz(study.runs_dir / f"reference_{study.score.reference_images}.npz")
        panels.insert(0, ("real images", class_rows(real.images, real.labels, args.per_class)))

    rows = len(panels[0][1]) // args.per_class
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 1.0 + 0.36 * rows),
                             squeeze=False, layout="constrained")  # fmt: skip
    for ax, (title, images) in zip(axes[0], panels):
        grid = make_grid(images, nrow=args.per_class)
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set(xticks=[], yticks=[])
    if prompts is not None:  # the prompts beside the first panel's rows
        side = grid.shape[0] / rows
        axes[0][0].set_yticks((np.arange(rows) + 0.5) * side, prompts, fontsize=7)
    what = "prompt" if prompts is not None else "class"
    heading = (f"study {study.name}: final samples, seed {study.seeds[0]}, step {study.steps}, "
               f"one {what} per row, one noise per column")  # fmt: skip
    fig.suptitle(textwrap.fill(heading, int(11 * fig.get_figwidth())), fontsize=10)
    out = Path(f"{study.report}_samples.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")  # prompts stick out left
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: samples(args))


if __name__ == "__main__":
    raise SystemExit(main())
