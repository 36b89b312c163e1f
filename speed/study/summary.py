"""A study's numbers from its records: each method's seed means and spreads, its speed-up over the
reference method in training steps and in wall-clock seconds (per seed, mean +- std, a bootstrap
interval, and of the mean curves), and the warnings where a number cannot mean anything.

Works on whatever runs have finished, so a study in progress can be read: a method without all
its seeds shows the ones it has, and every table says how many runs stand behind each number.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
from omegaconf import DictConfig

from speed.config import instantiate, load_config
from speed.experiments.curve import speedup, steps_to_reach
from speed.study.plan import (
    StudyRun,
    by_key,
    chosen_settings,
    common_setting,
    setting_text,
)
from speed.study.spec import HIGHER_IS_BETTER, Study, result_keys
from speed.study.timing import seconds_to

BOOTSTRAP_DRAWS = 10_000
EMA_INITIAL_SHARE = 0.1  # warn when the sampled EMA still holds this share of the initial weights
LAST_QUARTER = 0.75  # the reference's late improvement: from this share of its budget to the end
SETTLED_SHARE = 0.02  # ... counts when above this share of its final score (and above the noise)


def curve_of(record: dict, curve: str, metric: str) -> dict[int, float]:
    """step -> metric of one of a record's curves."""
    return {int(step): m[metric] for step, m in record[curve].items() if metric in m}


def as_loss(curve: dict, metric: str) -> dict:
    """A curve whose lower values are better (a higher-is-better metric negated)."""
    return {k: -v for k, v in curve.items()} if metric in HIGHER_IS_BETTER else curve


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample std of the finite values (None where there are too few)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def bootstrap_interval(values, level: float = 0.95, seed: int = 0) -> tuple | None:
    """Percentile bootstrap interval of the mean of `values` (None with fewer than two)."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(values) < 2:
        return None
    draws = np.random.default_rng(seed).choice(values, (BOOTSTRAP_DRAWS, len(values)))
    low, high = np.quantile(draws.mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def time_curve(record: dict, curve: dict[int, float], timing=None) -> dict[float, float] | None:
    """The curve against wall-clock training seconds: with a `timing` (timing.json, this box's
    seconds per step of each method and interval), the seconds it gives to each step (None for a
    method it lacks); else the record's per-checkpoint `seconds`, or step x its mean
    `sec_per_step` (records written before the per-checkpoint times)."""
    if timing is not None:
        entry = timing["methods"].get(record["method"])
        if entry is None:
            return None
        return {seconds_to(entry["sec_per_step"], s): v for s, v in curve.items()}
    seconds = record.get("seconds")
    if seconds:
        return {seconds[str(s)]: v for s, v in curve.items() if str(s) in seconds}
    if record.get("sec_per_step"):
        return {s * record["sec_per_step"]: v for s, v in curve.items()}
    return None


def seconds_speedup(
    base: dict, other: dict, metric: str, base_curve, other_curve, timing=None
) -> float | None:
    """How many times less training time `other` needs to reach the reference's final score
    (`timing`: the seconds of timing.json instead of the records')."""
    base_time = time_curve(base, base_curve, timing)
    other_time = time_curve(other, other_curve, timing)
    if not base_time or not other_time:
        return None
    target = base_curve[max(base_curve)]
    needed = steps_to_reach(other_time, target)
    reached = steps_to_reach(base_time, target)
    return None if needed is None or not needed or reached is None else reached / needed


def spread(per_seed: dict) -> dict:
    reached = [v for v in per_seed.values() if v is not None]
    mean, std = mean_std(reached)
    return {
        "per_seed": per_seed,
        "mean": mean,
        "std": std,
        "interval": bootstrap_interval(reached),
        "seeds_reaching_target": f"{len(reached)}/{len(per_seed)}",
    }


# ---- per method ----


def method_summary(study: Study, runs: list[dict]) -> dict:
    """Seed means and spreads of one method's runs (all at one setting)."""
    curves = {}
    for curve in study.score.curves:
        present = [r for r in runs if curve.name in r]
        curves[curve.name] = {}
        for metric in sorted({k for r in present for m in r[curve.name].values() for k in m}):
            per_run = [curve_of(r, curve.name, metric) for r in present]
            steps = sorted(set.intersection(*(set(c) for c in per_run))) if per_run else []
            stats = {s: mean_std(c[s] for c in per_run) for s in steps}
            curves[curve.name][metric] = {
                "mean": {s: v[0] for s, v in stats.items()},
                "std": {s: v[1] for s, v in stats.items()},
            }
    finals = {}
    for kind, key in study.score.final_keys():
        finals.setdefault(kind, {})[key] = mean_std(r["final"][kind].get(key) for r in runs)
    regions = [r["region_losses"] for r in runs if "region_losses" in r]
    return {
        "seeds": [r["seed"] for r in runs],
        "curves": curves,
        "final": finals,
        "sec_per_step": mean_std(r.get("sec_per_step") for r in runs)[0],
        "final_loss": mean_std(r.get("final_loss") for r in runs),
        "region_losses": {k: statistics.fmean(r[k] for r in regions) for k in regions[0]}
        if len(regions) == len(runs) and regions
        else None,
    }


def timed_sec_per_step(study: Study, timing: dict, method: str) -> float | None:
    """The timing's mean seconds per step of `method` over the study's step budget (stages
    weighted by their steps); None for a method it did not time or a budget in seconds."""
    entry = timing["methods"].get(method)
    if entry is None or not study.steps:
        return None
    return seconds_to(entry["sec_per_step"], study.steps) / study.steps


def compare(study: Study, cells: dict, method_setting: dict, timing=None) -> tuple[dict, dict]:
    """Seed summaries of the methods (method -> setting) and each one's speed-up over the
    reference method's run of the same seed, in steps and in seconds (with a `timing`, its
    seconds, and its s/step in the summaries; None where it lacks the method or the
    reference)."""
    curve, metric = study.score.speedup_metric
    methods = {}
    for method, setting in method_setting.items():
        runs = [cells[k] for s in study.seeds if (k := (method, setting, s)) in cells]
        if runs:
            methods[method] = {"setting": dict(setting), **method_summary(study, runs)}
            if timing is not None:  # this box's seconds, not the records' (other machines, loads)
                methods[method]["sec_per_step"] = timed_sec_per_step(study, timing, method)
    speedups = {}
    ref = study.reference
    if ref not in method_setting:
        return methods, speedups
    for method, setting in method_setting.items():
        if method == ref:
            continue
        steps, seconds = {}, {}
        for seed in study.seeds:
            base = cells.get((ref, method_setting[ref], seed))
            other = cells.get((method, setting, seed))
            if base is None or other is None:
                continue
            base_curve = as_loss(curve_of(base, curve, metric), metric)
            other_curve = as_loss(curve_of(other, curve, metric), metric)
            steps[seed] = speedup(base_curve, other_curve)
            seconds[seed] = seconds_speedup(base, other, metric, base_curve, other_curve, timing)
        if not steps:
            continue
        of_means = None
        if ref in methods and method in methods:
            means = [as_loss(methods[m]["curves"][curve][metric]["mean"], metric)
                     for m in (ref, method)]  # fmt: skip
            of_means = speedup(*means) if means[0] else None
        untimed = timing is not None and not {ref, method} <= set(timing["methods"])
        speedups[method] = {
            **spread(steps),
            "seconds": None if untimed else spread(seconds),
            "of_mean_curves": of_means,
        }
    return methods, speedups


def summarize(
    study: Study, runs: dict[tuple, StudyRun], records: dict[str, dict], timing=None
) -> dict:
    """Everything the report shows, from the finished runs (`timing`: timing.json, whose seconds
    the wall-clock speed-ups then use)."""
    cells = by_key(runs, records)
    chosen = chosen_settings(study, cells)
    tuned = [m.name for m in study.methods.values() if m.tuned]
    common = common_setting(study, chosen) if tuned else study.settings[0]
    # Until a method's setting is chosen, its first setting's runs stand in (the table says so).
    method_setting = {}
    for method in study.methods.values():
        if method.tuned:
            method_setting[method.name] = chosen[method.name] or study.settings[0]
        elif common is not None:
            method_setting[method.name] = common
    methods, speedups = compare(study, cells, method_setting, timing)
    shared = None
    if study.shared_seeds and common is not None:
        shared_methods, shared_speedups = compare(study, cells, {m: common for m in tuned}, timing)
        shared = {"setting": dict(common), "methods": shared_methods, "speedup": shared_speedups}
    kind, metric = study.score.choose_by
    probe = noise_probe(study, records)
    configs = method_configs(study, runs)
    weighting = {m: loss_weighting(cfg) for m, cfg in configs.items()}
    grid = {}
    if len(study.settings) > 1:
        first = study.seeds[0]
        for method in tuned:
            grid[method] = {
                setting_text(s): cells[k]["final"][kind]
                for s in study.settings
                if (k := (method, s, first)) in cells
            }
    return {
        "ladder": ladder(study, speedups),
        "chosen": {m: None if s is None else dict(s) for m, s in chosen.items()},
        "common_setting": None if common is None else dict(common),
        "methods": methods,
        "speedup": speedups,
        "shared": shared,
        "grid": grid,
        "noise_probe": probe,
        "warnings": warnings(study, configs, weighting, methods, records, probe, timing),
        "loss_weighting": weighting,
    }


def ladder(study: Study, speedups: dict) -> list[dict]:
    """Which part pays: each method of `study.ladder` against the one before it, per seed, in
    steps and in wall-clock: how many times sooner it reaches the reference method's final score
    (the ratio of the two methods' speed-ups over the reference, same seed; None where either
    does not reach it). The rungs' product is the last method's speed-up."""

    def per_seed(method: str, unit: str) -> dict:
        if method == study.reference:
            return dict.fromkeys(study.seeds, 1.0)
        measured = speedups.get(method)
        measured = measured if measured is None or unit == "steps" else measured["seconds"]
        return {} if measured is None else measured["per_seed"]

    rungs = []
    for below, above in zip(study.ladder, study.ladder[1:]):
        rung = {"from": below, "to": above}
        for unit in ("steps", "seconds"):
            low, high = per_seed(below, unit), per_seed(above, unit)
            ratios = {seed: high[seed] / low[seed] if high[seed] and low[seed] else None
                      for seed in sorted(low.keys() & high.keys())}  # fmt: skip
            rung[unit] = spread(ratios) if ratios else None
        rungs.append(rung)
    return rungs


def noise_probe(study: Study, records: dict) -> dict | None:
    """The first curve's score at the last step under several sampling seeds, and its std."""
    probe = next((r for r in records.values() if "noise_probe" in r), None)
    if probe is None:
        return None
    curve = study.score.curves[0]
    metric = result_keys(curve.metrics)[0]
    values = [probe[curve.name][str(study.steps)][metric]]
    values += [v[metric] for v in probe["noise_probe"].values()]
    return {"run": probe["name"], "metric": f"{curve.name}.{metric}", "values": values,
            "std": statistics.stdev(values)}  # fmt: skip


# ---- what a result cannot mean ----


def method_configs(study: Study, runs: dict[tuple, StudyRun]) -> dict[str, DictConfig]:
    """method -> the training config of its first run (what every seed and setting shares)."""
    configs = {}
    for (method, _, _), run in runs.items():
        if method not in configs:
            words = run.sweep_run.words(study.runs_dir.resolve() / "sweep")
            configs[method] = load_config(run.sweep_run.config, "train", words)
    return configs


def loss_weighting(cfg: DictConfig) -> str | None:
    """How the method's training loss is weighted over t (None: unweighted)."""
    weighting = instantiate(cfg.diffusion).timestep_sampler.weighting
    return None if weighting.name == "none" else weighting.describe()


def warnings(
    study: Study, configs: dict, weighting: dict, methods: dict, records: dict, probe, timing=None
) -> list:
    """Where a result cannot mean anything, one sentence each (`configs`: `method_configs`,
    `weighting`: method -> `loss_weighting`, `probe`: `noise_probe` or None, `timing`:
    timing.json or None)."""
    found = []
    kind, metric = study.score.choose_by
    finals = [m["final"][kind][metric][0] for m in methods.values()]
    finals = [f for f in finals if f is not None]
    if len(finals) > 1 and max(finals) - min(finals) <= 1e-9 * max(1.0, abs(max(finals))):
        found.append(
            f"every method scores the same final {kind} {metric} ({finals[0]:.4g}): the methods "
            "do not differ where it matters (check their overrides) or the score does not see it"
        )
    for method, cfg in configs.items():
        rate = float(cfg.ema_rates[0])
        share = rate**study.steps
        if cfg.use_ema_for_sampling and share > EMA_INITIAL_SHARE:
            found.append(
                f"{method}: its EMA (rate {rate:g}) still holds {share:.0%} of the initial weights "
                f"after {study.steps} steps, and the scores sample it: they measure the "
                "initialisation; lower ema_rates or train longer"
            )
    found += _kid_warnings(study)
    found += _moving_target(study, methods, probe)
    weighted = {m: w for m, w in weighting.items() if w}
    if weighted and len(weighted) < len(weighting):
        found.append(
            "training losses are weighted differently ("
            + ", ".join(f"{m}: {w}" for m, w in weighted.items())
            + "; the others unweighted): compare the scores, not the losses"
        )
    machines = sorted({r["machine"] for r in records.values() if "machine" in r})
    if timing is not None:
        missing = [m for m in methods if m not in timing["methods"]]
        if missing:
            found.append(
                f"{', '.join(missing)}: not in timing.json, so no wall-clock speed-up is shown; "
                f"rerun python -m speed.study {study.path} --time"
            )
    elif len(machines) > 1:
        found.append(
            f"the runs were timed on {len(machines)} different machines: the wall-clock speed-ups "
            "mix them (the step speed-ups do not)"
        )
    return found


def _moving_target(study: Study, methods: dict, probe: dict | None) -> list[str]:
    """The reference's speed-up curve (seed mean) better at its end than anywhere before the
    last quarter of the budget, by more than twice its noise (the larger of the seeds' std at
    the last step and the noise probe's std) and more than `SETTLED_SHARE` of its final score:
    the speed-ups are then to a score the reference was still leaving."""
    curve, metric = study.score.speedup_metric
    summary = methods.get(study.reference, {}).get("curves", {}).get(curve, {}).get(metric)
    if not summary or len(summary["mean"]) < 2:
        return []
    mean = summary["mean"]
    last = max(mean)
    earlier = [s for s in mean if s <= LAST_QUARTER * last]
    if not earlier:
        return []
    loss = as_loss(mean, metric)
    start = min(earlier, key=lambda step: (loss[step], -step))  # its best before (not a spike)
    measured = [v for v in (summary["std"][last], probe and probe["std"]) if v is not None]
    noise = max(measured, default=0.0)
    gain = loss[start] - loss[last]
    if gain <= max(2 * noise, SETTLED_SHARE * abs(mean[last])):
        return []
    spread = f"noise std {noise:.2g}" if measured else "noise not measured: one seed, no probe"
    return [
        f"{study.reference}: its {curve}.{metric} still improved from {mean[start]:.4g} at step "
        f"{start} to {mean[last]:.4g} at step {last} (seed mean; {spread}), so the "
        "speed-ups are to a score it was still leaving: raise budget.steps and run the study "
        "again (recorded runs train on from their last checkpoint)"
    ]


def _kid_warnings(study: Study) -> list[str]:
    score = study.score
    size = int(score.metric_settings.get("kid_subset_size", 1000))
    scored = [(f"curve {c.name}", c.samples, c.metrics) for c in score.curves]
    scored += [(f"final {kind}", score.final_samples, m) for kind, m in score.final.items()]
    found = []
    for where, samples, metrics in scored:
        whole = min(samples, score.reference_images)
        if "kid" in metrics and min(size, whole) == whole:
            found.append(
                f"{where}: KID subsets of {min(size, whole)} images are the whole set of "
                f"{whole}: every subset is the same and its spread says nothing; set "
                "score.metric_settings.kid_subset_size below it"
            )
    return found
