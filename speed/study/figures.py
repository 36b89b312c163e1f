"""A study's figure: each scored curve against training step (seed mean, band = +- std; dashed: a
method's runs at the common setting where that is not its own), each method's timestep density
and loss weights where the methods differ there, the held-out loss per tenth of t where the
records hold it, and with a ladder which part pays (each rung's factor over the one below)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from speed.config import instantiate
from speed.study.spec import Study
from speed.study.summary import method_configs


class TimestepTable(NamedTuple):
    """A method's training-time density and loss weights on its own time axis: `kind` is
    "discrete" (x = (original timestep + 1) / T) or "continuous" (x = the interpolant's t)."""

    kind: str
    x: np.ndarray
    density: np.ndarray  # 1 = uniform; after any dual sampling's mirrors
    weights: np.ndarray


def timestep_table(sampler) -> TimestepTable:
    """The table of a discrete or continuous timestep sampler (its `profile`)."""
    return TimestepTable(*sampler.profile())


def timestep_tables(study: Study, runs: dict, methods) -> dict[str, TimestepTable]:
    """method -> its `TimestepTable`, for `methods`."""
    return {
        method: timestep_table(instantiate(cfg.diffusion).timestep_sampler)
        for method, cfg in method_configs(study, runs).items()
        if method in methods
    }


def _differ(tables: list[TimestepTable]) -> bool:
    first = tables[0]
    return any(
        t.kind != first.kind
        or t.x.shape != first.x.shape
        or not all(np.allclose(a, b) for a, b in zip(t[1:], first[1:]))
        for t in tables
    )


def _plot_curve(ax, summary: dict, curve: str, metric: str, colors: dict) -> None:
    for method, m in summary["methods"].items():
        stats = m["curves"].get(curve, {}).get(metric)
        if not stats or not stats["mean"]:
            continue
        steps = sorted(stats["mean"])
        mean = np.array([stats["mean"][s] for s in steps])
        std = np.array([stats["std"][s] or 0.0 for s in steps])
        label = f"{method}, {len(m['seeds'])} seed(s)"
        ax.plot(steps, mean, color=colors[method], marker="o", markersize=3, label=label)
        ax.fill_between(steps, mean - std, mean + std, color=colors[method], alpha=0.2)
    shared = summary["shared"] or {"methods": {}}
    for method, m in shared["methods"].items():
        own = summary["methods"].get(method)
        stats = m["curves"].get(curve, {}).get(metric)
        if own and stats and m["setting"] != own["setting"]:
            steps = sorted(stats["mean"])
            ax.plot(steps, [stats["mean"][s] for s in steps], color=colors[method], ls="-.",
                    marker="x", markersize=3, label=f"{method} at the common setting")  # fmt: skip
    ax.set(xlabel="training step", ylabel=f"{curve} {metric}")
    if metric in ("fid", "sfid", "kid") and all(
        v > 0 for m in summary["methods"].values()
        for v in m["curves"].get(curve, {}).get(metric, {"mean": {}})["mean"].values()
    ):  # fmt: skip
        ax.set_yscale("log")
    ax.legend(fontsize=7)


def _plot_timesteps(ax, kind: str, tables: dict, colors: dict) -> None:
    twin = ax.twinx()
    for method, table in tables.items():
        ax.plot(table.x, table.density, color=colors[method], label=f"{method}: p")
        twin.plot(table.x, table.weights, color=colors[method], ls="--")
    axis = "(original timestep + 1) / T" if kind == "discrete" else "interpolant t (1 = noise)"
    ax.set(xlabel=axis, ylabel="density p (solid; 1 = uniform)")
    twin.set_ylabel("loss weight w (dashed)")
    ax.set_title(f"{kind} training times: density (after dual sampling), weights", fontsize=10)
    ax.set_ylim(0, 1.35 * ax.get_ylim()[1])  # headroom: the legend above the lines
    twin.set_ylim(0, 1.35 * twin.get_ylim()[1])
    ax.legend(fontsize=7, loc="upper right")


def _plot_regions(ax, summary: dict, colors: dict) -> None:
    methods = {m: s["region_losses"] for m, s in summary["methods"].items() if s["region_losses"]}
    width = 0.8 / max(1, len(methods))
    keys = []
    for i, (method, losses) in enumerate(methods.items()):
        keys = list(losses)
        xs = np.arange(len(keys)) + i * width
        ax.bar(xs, [losses[k] for k in keys], width, color=colors[method], label=method)
    ticks = np.arange(len(keys)) + 0.4 - width / 2
    ax.set_xticks(ticks, [k.split("/")[1] for k in keys], rotation=45, fontsize=7)
    ax.set(yscale="log", xlabel="t range", ylabel="held-out eps-MSE, final EMA")
    ax.legend(fontsize=7)


def _plot_ladder(ax, rungs: list[dict], colors: dict) -> None:
    """Each rung's speed-up over the one below: bars of the seed mean (steps hatched, wall-clock
    plain), a dot per seed; a rung no seed reaches has no bar."""
    from matplotlib.ticker import ScalarFormatter

    for i, rung in enumerate(rungs):
        for offset, unit, hatch in ((-0.2, "steps", "//"), (0.2, "seconds", None)):
            spread = rung[unit]
            if spread is None or spread["mean"] is None:
                continue
            ax.bar(i + offset, spread["mean"], 0.4, yerr=spread["std"] or 0.0, capsize=3,
                   color=colors[rung["to"]], alpha=0.7, hatch=hatch)  # fmt: skip
            seeds = [v for v in spread["per_seed"].values() if v is not None]
            ax.plot([i + offset] * len(seeds), seeds, "k.", markersize=4)
    ax.axhline(1.0, color="k", lw=0.8)
    labels = [f"+ {r['to']}\nover {r['from']}" for r in rungs]
    ax.set_xticks(range(len(rungs)), labels, fontsize=7)
    ax.set(yscale="log", ylabel="times sooner to the reference's final score")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_title("which part pays: steps (hatched), wall-clock (plain); dots: seeds", fontsize=10)


def plot(study: Study, runs: dict, summary: dict, path: Path) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    names = list(study.methods)
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {m: palette(i % palette.N) for i, m in enumerate(names)}
    panels = [
        ("curve", (c.name, metric)) for c in study.score.curves for metric in _keys(summary, c.name)
    ]
    tables = timestep_tables(study, runs, summary["methods"])
    for kind in ("discrete", "continuous"):
        same_kind = {m: t for m, t in tables.items() if t.kind == kind}
        if len(same_kind) > 1 and _differ(list(same_kind.values())):
            panels.append(("timesteps", (kind, same_kind)))
    if any(m["region_losses"] for m in summary["methods"].values()):
        panels.append(("regions", None))
    if summary["ladder"]:
        panels.append(("ladder", summary["ladder"]))
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    figure = Figure(figsize=(6.5 * cols, 4.5 * rows))
    axes = np.atleast_1d(figure.subplots(rows, cols)).ravel()
    for ax, (kind, what) in zip(axes, panels):
        if kind == "curve":
            _plot_curve(ax, summary, *what, colors)
        elif kind == "timesteps":
            _plot_timesteps(ax, *what, colors)
        elif kind == "ladder":
            _plot_ladder(ax, what, colors)
        else:
            _plot_regions(ax, summary, colors)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(f"study {study.name}: seed mean, band +- std", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.25 / figure.get_figheight()))  # room for the title
    figure.savefig(path, dpi=90)


def _keys(summary: dict, curve: str) -> list[str]:
    """The metrics a curve holds in any method's summary, in a stable order."""
    keys = {k for m in summary["methods"].values() for k in m["curves"].get(curve, {})}
    return sorted(keys, key=lambda k: (k != "fid", k))
