"""How much sooner each method of a study reaches the score where the DiT baseline levels off,
instead of its still-falling 6000-step score.

The long study (studies/masked_dit_long.yaml) trains the masked study's DiT baseline on (12000
steps, then 18000); for each of its seeds, the baseline's final curve FID is the target and the
step where its own curve first gets there is the baseline's time to it. Each method of the study
read (studies/masked_dit.yaml by default, or any study whose reference method is that baseline,
such as studies/flow_dit.yaml with its copied `ddpm`: the same config, data order, noise and
scorer) is read on its run of the same seed, or on the long study's where that trains the method
on (DiT + SpeeD released), for the step where its curve gets to that target (crossings
interpolated linearly between scored steps, `speed.experiments.curve.speedup`); "never" where it
does not within that run. Wall-clock uses the study's own timing (timing.json: every method timed
on one idle box, its reference's seconds for the long baseline's).

    python benchmarks/long_targets.py                          # the masked study
    python benchmarks/long_targets.py studies/flow_dit.yaml    # the flow study

Reads the studies' records (no training, no sampling); prints a table and writes
benchmarks/results/<study name>_long_targets.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from speed.experiments.curve import speedup, steps_to_reach
from speed.study.plan import open_study
from speed.study.report import speedup_cells
from speed.study.summary import curve_of, seconds_speedup, spread
from speed.study.timing import load_timing

REPO = Path(__file__).resolve().parents[1]
LONG = REPO / "studies/masked_dit_long.yaml"
MASKED = REPO / "studies/masked_dit.yaml"
RESULTS = REPO / "benchmarks/results"
CURVE, METRIC = "curve", "fid"


def by_method_seed(records: dict) -> dict[tuple[str, int], dict]:
    return {(r["method"], r["seed"]): r for r in records.values()}


def targets(long_runs: dict) -> dict[int, dict]:
    """seed -> the long baseline's final curve FID and the step its curve first reaches it."""
    out = {}
    for (method, seed), record in sorted(long_runs.items()):
        if method == "baseline":
            curve = curve_of(record, CURVE, METRIC)
            final = curve[max(curve)]
            out[seed] = {"fid": final, "step": max(curve), "reached": steps_to_reach(curve, final)}
    return out


def longest(*records: dict | None) -> dict | None:
    """The record whose curve goes furthest: a method the long study trains on too is read on
    its long run (the same run as the masked study's, continued)."""
    present = [r for r in records if r is not None]
    return max(present, key=lambda r: max(curve_of(r, CURVE, METRIC)), default=None)


def compare(
    long_runs: dict, study_runs: dict, methods: list[str], timing: dict, reference="baseline"
) -> dict:
    """method -> {"steps": spread, "seconds": spread} of its speed-ups to each seed's target
    (`reference`: the study's name of the long baseline's method, whose seconds it takes)."""
    result = {}
    for method in methods:
        steps, seconds = {}, {}
        for (name, seed), base in sorted(long_runs.items()):
            other = longest(long_runs.get((method, seed)), study_runs.get((method, seed)))
            if name != "baseline" or other is None:
                continue
            base = {**base, "method": reference}
            base_curve = curve_of(base, CURVE, METRIC)
            other_curve = curve_of(other, CURVE, METRIC)
            steps[seed] = speedup(base_curve, other_curve)
            seconds[seed] = seconds_speedup(
                base, other, METRIC, base_curve, other_curve, timing
            )  # fmt: skip
        result[method] = {"steps": spread(steps), "seconds": spread(seconds)}
    return result


def markdown(meta: dict, goals: dict, result: dict) -> str:
    lines = [
        f"# The {meta['name']} study's methods against the baseline's levelled-off score",
        "",
        f"`{meta['command']}`, {meta['date']}; records of {meta['long']} and {meta['study']}; "
        f"seconds from the {meta['name']} study's timing ({meta['timing_machine']}, "
        f"{meta['timing_date']}).",
        "",
        "Target per seed: the long baseline's final curve FID (256 samples, guidance 2), and the "
        "step where the baseline's curve first reaches it:",
        "",
        "| seed | target curve FID | baseline's last step | baseline reaches it at |",
        "|---|---:|---:|---:|",
    ]
    for seed, goal in goals.items():
        lines.append(f"| {seed} | {goal['fid']:.1f} | {goal['step']} | {goal['reached']:.0f} |")
    lines += [
        "",
        "| method | speed-up per seed (steps) | mean +- std | speed-up per seed (wall-clock) | "
        "mean +- std |",
        "|---|---|---|---|---|",
    ]
    for method, s in result.items():
        row = speedup_cells(s["steps"])[:2] + speedup_cells(s["seconds"])[:2]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Each method is read on its longest run of the seed: the long study's for the methods "
        f"it trains on, else the {meta['name']} study's {meta['steps']} steps; 'never' means "
        "not within that run.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", type=Path, default=MASKED.relative_to(REPO),
                        help="a study whose reference is the masked study's baseline")  # fmt: skip
    path = parser.parse_args(argv).study
    default = path.resolve() == MASKED
    long_study, _, _, long_records = open_study(LONG)
    study, _, _, records = open_study(path)
    same_as = study.methods[study.reference].same_as
    copied = same_as and (same_as.study.resolve(), same_as.method) == (MASKED, "baseline")
    if not (copied or (default and study.reference == "baseline")):
        print(f"error: {path}: its reference method is not the masked study's baseline, which "
              f"{LONG.relative_to(REPO)} trains on", file=sys.stderr)  # fmt: skip
        return 2
    timing = load_timing(study)
    if timing is None:
        print(f"error: no timing.json in {study.records_dir}: run python -m speed.study "
              f"{path} --time --threads 1", file=sys.stderr)  # fmt: skip
        return 2
    long_runs, study_runs = by_method_seed(long_records), by_method_seed(records)
    methods = [m for m in study.methods if m != study.reference]
    goals = targets(long_runs)
    result = compare(long_runs, study_runs, methods, timing, study.reference)
    meta = {
        "command": "python benchmarks/long_targets.py" + ("" if default else f" {path}"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "name": study.name,
        "steps": study.steps,
        "long": str(LONG.relative_to(REPO)),
        "study": str(path.resolve().relative_to(REPO)),
        "timing_machine": timing["machine"],
        "timing_date": timing["date"],
    }
    text = markdown(meta, goals, result)
    out = RESULTS / f"{study.name}_long_targets"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    payload = {**meta, "targets": goals, "speedups": result}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
