"""Plot a training config's timestep distribution p_t, loss weights w_t and loss by timestep.

    python -m speed.study.plot_timesteps -c CONFIG [key=value ...] --out DIR [--loss FILE]

Writes p_t.png, w_t.png and, given a loss file, loss_by_t.png into DIR. For a DDPM config each
plot shades SpeeD's three areas (arXiv 2405.17403) of the process increment: acceleration up to
the peak of g_t = d(1 - abar)/dt (the noise variance grows faster and faster), deceleration from
there to the pivot M, convergence from M on; a dashed line marks the sampler's tau. A loss file is
a CSV with columns `t,loss`, or JSON / JSON lines holding the `loss_t/AAA-BBB` values that
training logs (several records are averaged). A flow-matching config's continuous t gets its
density and weights on [0, 1] (1 = noise), with SpeeD's mirror point where it has one.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from speed.config import instantiate, load_config
from speed.diffusion.timesteps import TimestepSampler

AREAS = (("acceleration", "tab:green"), ("deceleration", "tab:orange"), ("convergence", "tab:gray"))


def _shade_areas(ax, sampler: TimestepSampler) -> None:
    schedule = sampler.schedule
    peak = schedule.timesteps[np.argmax(schedule.derivative(1.0 - schedule.alphas_cumprod))]
    pivot, end = min(sampler.pivot, schedule.num_original_steps), schedule.num_original_steps
    for (label, color), (lo, hi) in zip(AREAS, ((0, peak), (peak, pivot), (pivot, end))):
        if hi > lo:
            ax.axvspan(lo, hi, color=color, alpha=0.12, label=label)
    ax.axvline(sampler.tau, color="k", linestyle="--", linewidth=0.8, label=f"tau={sampler.tau:g}")
    ax.set_xlim(0, end)
    ax.set_xlabel("timestep t (original scale)")


def _save(fig: Figure, path: Path) -> Path:
    fig.axes[0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def read_loss_by_t(path) -> tuple[np.ndarray, np.ndarray]:
    """(t, mean loss) arrays from a `t,loss` CSV or JSON / JSON lines of `loss_t/AAA-BBB` keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"loss file not found: {path}")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"t", "loss"} <= set(rows[0]):
            raise ValueError(f"{path}: a loss CSV needs a header with columns 't' and 'loss'")
        return np.array([float(r["t"]) for r in rows]), np.array([float(r["loss"]) for r in rows])
    text = path.read_text()
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    values = defaultdict(list)
    for record in records if isinstance(records, list) else [records]:
        for key, value in record.items():
            if key.startswith("loss_t/"):
                values[key].append(float(value))
    if not values:
        raise ValueError(f"{path}: no 'loss_t/AAA-BBB' entries (log loss_by_region or use a CSV)")
    centers = {key: np.mean([int(x) for x in key[7:].split("-")]) for key in values}
    keys = sorted(values, key=centers.get)
    return np.array([centers[k] for k in keys]), np.array([np.mean(values[k]) for k in keys])


def plot_timestep_distributions(sampler, out_dir, loss_path=None) -> list[Path]:
    """Write p_t.png, w_t.png (and loss_by_t.png if `loss_path`) into `out_dir`; return paths.
    A continuous-time sampler (flow matching) is drawn on its own t axis, without loss file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if sampler.profile()[0] == "continuous":
        return _plot_continuous(sampler, out, loss_path)
    t = sampler.timesteps
    paths = []

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    _shade_areas(ax, sampler)
    ax.step(t, sampler.probs, where="mid", label="p_t (base)")
    if not np.allclose(sampler.effective_probs, sampler.probs):
        ax.step(t, sampler.effective_probs, where="mid", alpha=0.7, label="with dual (per draw)")
    ax.set_ylabel("probability per step")
    ax.set_title(sampler.sampling.describe(), fontsize=9)
    paths.append(_save(fig, out / "p_t.png"))

    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    _shade_areas(ax, sampler)
    weights = sampler.profile()[3]
    ax.plot(t, weights, label="w_t")
    ax.set_ylabel("loss weight (MSE term)")
    ax.set_title(sampler.weighting.describe(), fontsize=9)
    paths.append(_save(fig, out / "w_t.png"))

    if loss_path is not None:
        loss_t, loss = read_loss_by_t(loss_path)
        fig = Figure(figsize=(7, 3.5))
        ax = fig.add_subplot()
        _shade_areas(ax, sampler)
        ax.plot(loss_t, loss, marker="o", label="training loss")
        ax.set_ylabel("mean loss")
        paths.append(_save(fig, out / "loss_by_t.png"))
    return paths


def _plot_continuous(sampler, out: Path, loss_path) -> list[Path]:
    if loss_path is not None:
        raise ValueError(
            "--loss reads the loss per bucket of discrete timesteps (loss_t/AAA-BBB); a "
            "flow-matching run's time is continuous: leave --loss out"
        )
    _, t, density, weights = sampler.profile()
    distribution, paths = sampler.distribution, []
    for name, values, label, title in (
        ("p_t.png", density, "density of drawn t (1 = uniform)", distribution.describe()),
        ("w_t.png", weights, "loss weight (MSE term)", sampler.weighting.describe()),
    ):
        fig = Figure(figsize=(7, 3.5))
        ax = fig.add_subplot()
        ax.plot(t, values, label=name.removesuffix(".png"))
        if sampler.pivot is not None:
            ax.axvline(sampler.pivot, color="k", linestyle="--", linewidth=0.8,
                       label=f"mirror point {sampler.pivot:.3f}")  # fmt: skip
        ax.set(xlim=(0, 1), xlabel="t (interpolant time; 1 = noise)", ylabel=label)
        ax.set_title(title, fontsize=9)
        paths.append(_save(fig, out / name))
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="experiment YAML")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--loss", default=None, help="loss-by-t CSV or JSON(L) from training")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config, "train", args.overrides)
        sampler = instantiate(config.diffusion).timestep_sampler
        paths = plot_timestep_distributions(sampler, args.out, args.loss)
    except (ValueError, KeyError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    print(sampler.describe())
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
