"""The SpeeD study's numbers, tables and figure from its run records (benchmarks/speedup.py).

Works on whatever runs have finished, so a study in progress can be read: a method without all
its seeds shows the ones it has, and every table says how many runs stand behind each number.
Writes `speedup_<backbone>.{json,md,png}` beside the records' folder.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from pathlib import Path

import numpy as np
from speedup_plan import (
    NAMED,
    PARTS,
    RELEASED_PARTS,
    SAMPLINGS,
    WEIGHTINGS,
    Plan,
    by_cell,
    choose_lr,
    common_lr,
)

from speed.diffusion import create_diffusion
from speed.experiments.curve import speedup

COLORS = {
    "baseline": "tab:blue",
    "speed_paper": "tab:orange",
    "speed_released": "tab:green",
    "speed_sampling_only": "tab:purple",
    "speed_weighting_only": "tab:red",
    "tanh_sampling_only": "tab:brown",
    "p2_weighting_only": "tab:olive",
}
LABELS = {
    "baseline": "baseline (uniform t, no weights)",
    "speed_paper": "SpeeD, paper (asymmetric + dual t, change-aware w)",
    "speed_released": "SpeeD, released code (tanh t, P2 w)",
    "speed_sampling_only": "the paper's sampling alone (no weights)",
    "speed_weighting_only": "the paper's weights alone (uniform t)",
    "tanh_sampling_only": "the released code's sampling alone (no weights)",
    "p2_weighting_only": "P2 weights alone (uniform t)",
}


def curve_of(record: dict, key: str = "curve", metric: str = "fid") -> dict[int, float]:
    """step -> metric of one of a record's curves."""
    return {int(step): m[metric] for step, m in record[key].items()}


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample std of the finite values (None where there are too few)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def method_summary(plan: Plan, runs: list[dict]) -> dict:
    """Seed means and spreads of one method's runs (all at its chosen learning rate)."""
    steps = sorted(set.intersection(*(set(curve_of(r)) for r in runs)))
    fid = {s: mean_std(curve_of(r)[s] for r in runs) for s in steps}
    accuracy = {s: mean_std(curve_of(r, metric="class_accuracy")[s] for r in runs) for s in steps}
    g1 = [curve_of(r, "curve_guidance1") for r in runs]
    g1_steps = sorted(set.intersection(*(set(c) for c in g1)))
    return {
        "seeds": [r["seed"] for r in runs],
        "fid_mean": {s: v[0] for s, v in fid.items()},
        "fid_std": {s: v[1] for s, v in fid.items()},
        "accuracy_mean": {s: v[0] for s, v in accuracy.items()},
        "guidance1_fid_mean": {s: mean_std(c[s] for c in g1)[0] for s in g1_steps},
        "final_domain_fid": mean_std(r["final"]["domain"]["fid"] for r in runs),
        "final_class_accuracy": mean_std(r["final"]["domain"]["class_accuracy"] for r in runs),
        "final_inception_fid": mean_std(r["final"]["inception"]["fid"] for r in runs),
        "region_losses": {
            k: statistics.fmean(r["region_losses"][k] for r in runs)
            for k in runs[0]["region_losses"]
        },
        "sec_per_step": mean_std(r.get("sec_per_step") for r in runs)[0],
    }


def compare(plan: Plan, cells: dict, cell_rate: dict[str, tuple]) -> tuple[dict, dict]:
    """Seed summaries of the methods (method -> (cell, rate)) and each one's speed-up over the
    baseline's run of the same seed."""
    methods = {}
    for method, (cell, lr) in cell_rate.items():
        runs = [cells[key] for s in plan.seeds if (key := (*cell, lr, s)) in cells]
        if runs:
            methods[method] = {"lr": lr, **method_summary(plan, runs)}
    speedups = {}
    base_cell, base_lr = cell_rate["baseline"]
    for method, (cell, lr) in cell_rate.items():
        if method == "baseline":
            continue
        per_seed = {}
        for seed in plan.seeds:
            base = cells.get((*base_cell, base_lr, seed))
            other = cells.get((*cell, lr, seed))
            if base is not None and other is not None:
                per_seed[seed] = speedup(curve_of(base), curve_of(other))
        if not per_seed:
            continue
        reached = [v for v in per_seed.values() if v is not None]
        mean, std = mean_std(reached)
        of_means = None
        if "baseline" in methods and method in methods:
            of_means = speedup(methods["baseline"]["fid_mean"], methods[method]["fid_mean"])
        speedups[method] = {
            "per_seed": per_seed,
            "mean": mean,
            "std": std,
            "seeds_reaching_target": f"{len(reached)}/{len(per_seed)}",
            "of_mean_curves": of_means,
        }
    return methods, speedups


def summarize(plan: Plan, records: dict[str, dict]) -> dict:
    """Everything the README reports, from the finished runs."""
    cells = by_cell(records)
    first = plan.seeds[0]
    chosen = {m: choose_lr(cells, plan, m) for m in NAMED}
    # Until a method's rate is chosen, its first rate's runs stand in (said in the table).
    used = {m: chosen[m] if chosen[m] is not None else plan.lrs[0] for m in NAMED}
    grid_lr = common_lr(chosen, plan)
    # method -> (cell, rate): the named methods, and each variant's two parts alone once their
    # rate is known
    cell_rate = {m: (cell, used[m]) for m, cell in NAMED.items()}
    if grid_lr is not None:
        parts = {**PARTS, **RELEASED_PARTS}
        cell_rate.update({part: (cell, grid_lr) for part, cell in parts.items()})
    methods, speedups = compare(plan, cells, cell_rate)
    shared = None
    if plan.shared_rate_seeds and grid_lr is not None:
        shared_methods, shared_speedups = compare(
            plan, cells, {m: (cell, grid_lr) for m, cell in NAMED.items()}
        )
        shared = {"lr": grid_lr, "methods": shared_methods, "speedup": shared_speedups}

    lr_grid = {
        method: {
            lr: cells[k]["final"]["domain"] for lr in plan.lrs if (k := (*c, lr, first)) in cells
        }
        for method, c in NAMED.items()
    }
    grid = {}
    if grid_lr is not None:
        for s in SAMPLINGS:
            for w in WEIGHTINGS:
                if (s, w, grid_lr, first) in cells:
                    final = cells[(s, w, grid_lr, first)]["final"]
                    grid[f"{s}/{w}"] = {
                        **final["domain"],
                        "inception_fid": final["inception"]["fid"],
                    }
    probe = next((r for r in records.values() if "noise_probe" in r), None)
    noise = None
    if probe is not None:
        fids = [probe["curve"][str(plan.steps)]["fid"]]
        fids += [v["fid"] for v in probe["noise_probe"].values()]
        noise = {"run": probe["name"], "fids": fids, "std": statistics.stdev(fids)}
    return {
        "chosen_lr": chosen,
        "methods": methods,
        "speedup": speedups,
        "shared_rate": shared,
        "lr_grid": lr_grid,
        "grid_lr": grid_lr,
        "grid": grid,
        "noise_probe": noise,
    }


# ---- output ----


def _fmt(value, spec=".1f") -> str:
    return "-" if value is None else format(value, spec)


def _pm(pair, spec=".1f") -> str:
    mean, std = pair
    return _fmt(mean, spec) + ("" if std is None else f" +- {std:{spec}}")


def _speedup_cells(s: dict) -> tuple[str, str, str]:
    """A variant's speed-up as table cells: per seed, mean +- std, of the mean curves."""
    per_seed = ", ".join(
        f"seed {seed}: " + ("never" if v is None else f"{v:.2f}x")
        for seed, v in s["per_seed"].items()
    )
    mean = f"{_pm((s['mean'], s['std']), '.2f')} ({s['seeds_reaching_target']} reach)"
    return per_seed or "-", mean, _fmt(s["of_mean_curves"], ".2f")


def markdown(backbone: str, plan: Plan, summary: dict, records: dict) -> str:
    machines = sorted({r["machine"] for r in records.values()})
    dates = sorted({r["date"] for r in records.values()})
    lines = [
        f"SpeeD study, backbone `{backbone}` (`configs/image/animals/{plan.config}`), "
        f"{plan.steps} steps per run; {len(records)} run(s) finished, {dates[0]} to {dates[-1]}, "
        f"on {'; '.join(machines)}.",
        "",
        f"Scores: domain-classifier FID / class accuracy of {plan.num_samples} samples "
        f"({' '.join(plan.sampling)}, guidance {plan.guidance:g}) against {plan.num_reference} "
        f"real images; final: {plan.final_samples} samples, domain and Inception FID.",
        "",
        "| method | lr | seeds | final domain FID | class acc | Inception FID | "
        "FID, guidance 1 | s/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, m in summary["methods"].items():
        decided = summary["chosen_lr"].get(method, m["lr"]) is not None  # a part: the common rate
        chosen = "" if decided else " (not yet chosen)"
        g1 = m["guidance1_fid_mean"].get(plan.steps)
        lines.append(
            f"| {method} | {m['lr']:g}{chosen} | {len(m['seeds'])} | {_pm(m['final_domain_fid'])} "
            f"| {_pm(m['final_class_accuracy'], '.3f')} | {_pm(m['final_inception_fid'])} | "
            f"{_fmt(g1)} | {_fmt(m['sec_per_step'], '.2f')} |"
        )
    lines += [
        "",
        "| variant | speed-up per seed | mean +- std | of the mean curves |",
        "|---|---|---|---|",
    ]
    for method, s in summary["speedup"].items():
        lines.append(f"| {method} | " + " | ".join(_speedup_cells(s)) + " |")
    if summary["shared_rate"]:
        shared = summary["shared_rate"]
        lines += [
            "",
            f"Every method at the common rate, lr {shared['lr']:g} (shared settings; speed-up "
            "over the baseline's run of the same seed at that rate):",
            "",
            "| method | seeds | final domain FID | class acc | Inception FID | speed-up per seed "
            "| mean +- std | of the mean curves |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method, m in shared["methods"].items():
            s = shared["speedup"].get(method)
            speedup_cells = ("-", "-", "-") if s is None else _speedup_cells(s)
            lines.append(
                f"| {method} | {len(m['seeds'])} | {_pm(m['final_domain_fid'])} | "
                f"{_pm(m['final_class_accuracy'], '.3f')} | {_pm(m['final_inception_fid'])} | "
                + " | ".join(speedup_cells)
                + " |"
            )
    lines += ["", "FID (seed mean) against training step:", ""]
    steps = sorted({s for m in summary["methods"].values() for s in m["fid_mean"]})
    lines += ["| method | " + " | ".join(map(str, steps)) + " |", "|---" * (len(steps) + 1) + "|"]
    for method, m in summary["methods"].items():
        lines.append(
            f"| {method} | " + " | ".join(_fmt(m["fid_mean"].get(s)) for s in steps) + " |"
        )
    lines += ["", "Learning-rate grid (seed 0, final domain FID / class accuracy):", ""]
    lines += ["| method | " + " | ".join(f"lr {lr:g}" for lr in plan.lrs) + " |"]
    lines.append("|---" * (len(plan.lrs) + 1) + "|")
    for method, row in summary["lr_grid"].items():
        cells = [
            f"{row[lr]['fid']:.1f} / {row[lr]['class_accuracy']:.3f}" if lr in row else "-"
            for lr in plan.lrs
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if summary["grid"]:
        lines += [
            "",
            f"Sampling x weighting (seed 0, lr {summary['grid_lr']:g}, final domain FID / "
            "Inception FID):",
            "",
        ]
        lines += ["| sampling \\ weighting | " + " | ".join(WEIGHTINGS) + " |", "|---" * 4 + "|"]
        for s in SAMPLINGS:
            row = [summary["grid"].get(f"{s}/{w}") for w in WEIGHTINGS]
            lines.append(
                f"| {s} | "
                + " | ".join(
                    "-" if c is None else f"{c['fid']:.1f} / {c['inception_fid']:.1f}" for c in row
                )
                + " |"
            )
    if summary["noise_probe"]:
        probe = summary["noise_probe"]
        fids = ", ".join(f"{f:.1f}" for f in probe["fids"])
        count = len(probe["fids"])
        lines += [
            "",
            f"Noise of a {plan.num_samples}-sample FID (one checkpoint, {count} sampling seeds): "
            f"{fids}; std {probe['std']:.2f}.",
        ]
    return "\n".join(lines) + "\n"


def timestep_tables(plan: Plan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """method -> (effective p_t, w_t) over the 1000 training steps."""
    tables = {}
    for method, (sampling, weighting) in NAMED.items():
        sampler = create_diffusion("", sampling=sampling, weighting=weighting).timestep_sampler
        weights = sampler.weights if sampler.weights is not None else np.ones(sampler.num_timesteps)
        tables[method] = (sampler.effective_probs, weights)
    return tables


def plot(backbone: str, plan: Plan, summary: dict, path: Path) -> None:
    """FID and class accuracy against step (seed mean, band = +- std), p_t and w_t, region loss."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 9))
    (fid_ax, acc_ax), (pt_ax, loss_ax) = figure.subplots(2, 2)
    for method, m in summary["methods"].items():
        steps = sorted(m["fid_mean"])
        mean = np.array([m["fid_mean"][s] for s in steps])
        std = np.array([m["fid_std"][s] or 0.0 for s in steps])
        label = f"{LABELS[method]}, lr {m['lr']:g}, {len(m['seeds'])} seed(s)"
        fid_ax.plot(steps, mean, color=COLORS[method], marker="o", markersize=3, label=label)
        fid_ax.fill_between(steps, mean - std, mean + std, color=COLORS[method], alpha=0.2)
        acc = [m["accuracy_mean"][s] for s in steps]
        acc_ax.plot(steps, acc, color=COLORS[method], marker="o", markersize=3, label=method)
        g1 = sorted(m["guidance1_fid_mean"])
        fid_ax.plot(g1, [m["guidance1_fid_mean"][s] for s in g1], color=COLORS[method], ls=":")
    shared = summary["shared_rate"] or {"methods": {}}
    for method, m in shared["methods"].items():  # a method's runs at the common rate, not its own
        if method in summary["methods"] and m["lr"] != summary["methods"][method]["lr"]:
            steps = sorted(m["fid_mean"])
            label = f"{LABELS[method]}, lr {m['lr']:g} (the common rate), {len(m['seeds'])} seed(s)"
            style = {"color": COLORS[method], "ls": "-.", "marker": "x", "markersize": 3}
            fid_ax.plot(steps, [m["fid_mean"][s] for s in steps], label=label, **style)
            acc_ax.plot(steps, [m["accuracy_mean"][s] for s in steps], **style)
    fid_ax.set(xlabel="training step", ylabel="domain FID", yscale="log")
    fid_ax.set_title(f"{backbone}: FID (solid: guidance {plan.guidance:g}, dotted: 1)", fontsize=10)
    fid_ax.legend(fontsize=7)
    acc_ax.set(xlabel="training step", ylabel="class accuracy (domain classifier)")
    acc_ax.legend(fontsize=8)
    twin = pt_ax.twinx()
    for method, (probs, weights) in timestep_tables(plan).items():
        pt_ax.plot(probs * len(probs), color=COLORS[method], label=f"{method}: T p_t")
        twin.plot(weights, color=COLORS[method], ls="--")
    pt_ax.set(xlabel="t", ylabel="T * p_t (solid; 1 = uniform)")
    twin.set_ylabel("w_t (dashed)")
    pt_ax.set_title("timestep density after dual sampling, and loss weights", fontsize=10)
    pt_ax.set_ylim(0, 1.35 * pt_ax.get_ylim()[1])  # headroom: the legend above the lines
    twin.set_ylim(0, 1.35 * twin.get_ylim()[1])
    pt_ax.legend(fontsize=8, loc="upper right")
    keys, width = None, 0.8 / max(1, len(summary["methods"]))
    for i, (method, m) in enumerate(summary["methods"].items()):
        keys = list(m["region_losses"])
        xs = np.arange(len(keys)) + i * width
        loss_ax.bar(
            xs, [m["region_losses"][k] for k in keys], width, color=COLORS[method], label=method
        )
    if keys:
        loss_ax.set_xticks(
            np.arange(len(keys)) + 0.4 - width / 2,
            [k.split("/")[1] for k in keys],
            rotation=45,
            fontsize=7,
        )
    loss_ax.set(yscale="log", xlabel="t range", ylabel="held-out eps-MSE, final EMA")
    loss_ax.legend(fontsize=8)
    for axes in (fid_ax, acc_ax, pt_ax, loss_ax):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_report(backbone: str, plan: Plan, records: dict[str, dict], results: Path) -> Path:
    """Write speedup_<backbone>.json (summary + every record), .md and .png; returns the stem."""
    summary = summarize(plan, records)
    stem = results / f"speedup_{backbone}"
    data = {
        "benchmark": f"speedup_{backbone}",
        "written": datetime.date.today().isoformat(),
        "plan": {k: v for k, v in plan.__dict__.items()},
        "summary": summary,
        "runs": records,
    }
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    table = markdown(backbone, plan, summary, records)
    stem.with_suffix(".md").write_text(table)
    plot(backbone, plan, summary, stem.with_suffix(".png"))
    print(table)
    print(f"wrote {stem}.json, .md and .png")
    return stem


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
