"""Where a study stands, without touching it: each run recorded, trained part-way (its last
checkpoint), held by a live worker, copied from another study, or not begun; and the training
time left at the speed its runs trained (`python -m speed.study STUDY.yaml --status`).
"""

from __future__ import annotations

import statistics

from speed.run import RunDir, RunLock, checkpoint_step, latest_checkpoint
from speed.study.plan import StudyRun, copy_sources, short_of_budget, stages
from speed.study.spec import Study
from speed.study.summary import timed_sec_per_step
from speed.study.timing import load_timing
from speed.study.work import CLAIM_FILE
from speed.sweep.expand import Sweep


def trained_step(run: StudyRun, sweep: Sweep) -> int:
    """The step of the run's newest checkpoint (0: none)."""
    newest = latest_checkpoint(RunDir(run.sweep_run.run_dir(sweep.sweep_dir)).checkpoints)
    return 0 if newest is None else checkpoint_step(newest)


def worker_of(run: StudyRun, sweep: Sweep) -> str | None:
    """'pid P on HOST' of the live worker holding the run, else None."""
    lock = RunLock(run.sweep_run.run_dir(sweep.sweep_dir), CLAIM_FILE)
    if not lock.held_by_another():
        return None
    holder = lock.holder()
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"


def sec_per_step(study: Study, records: dict) -> dict[str, float]:
    """method -> the mean `sec_per_step` of its recorded runs (their machine, their load), else
    of the study's timing.json (`--time`: one idle worker)."""
    timing = load_timing(study)
    timed = {m: timed_sec_per_step(study, timing, m) for m in timing["methods"]} if timing else {}
    per_method: dict[str, list[float]] = {}
    for record in records.values():
        if record.get("sec_per_step") and "copied_from" not in record:
            per_method.setdefault(record["method"], []).append(record["sec_per_step"])
    recorded = {method: statistics.fmean(values) for method, values in per_method.items()}
    return {m: v for m, v in timed.items() if v is not None} | recorded


def run_line(study: Study, sweep: Sweep, run: StudyRun, record, source) -> tuple[str, int]:
    """(a run's state in words, its training steps left)."""
    if source is not None:
        state = "copied" if record is not None else f"waits for {source}"
        return state, 0
    if record is not None and not short_of_budget(study, record):
        return f"done, {record['steps']} steps", 0
    step = trained_step(run, sweep)
    state = f"recorded at {record['steps']}, " if record is not None else ""
    state += f"trained to {step} of {study.steps}" if step else "not begun"
    worker = worker_of(run, sweep)
    if step >= study.steps:
        state += ", being scored" if worker else ", to score"
    return state + (f" ({worker})" if worker else ""), study.steps - step


def status_lines(study: Study, sweep: Sweep, runs: dict, records: dict) -> list[str]:
    """One line per run of the known stages, then the totals."""
    sources = copy_sources(study)
    speeds = sec_per_step(study, records)
    lines, seconds, unknown, done, short, total = [], 0.0, [], 0, 0, 0
    known = list(stages(study, runs, records))
    for run in (r for stage in known if stage is not None for r in stage):
        record = records.get(run.name)
        state, left = run_line(study, sweep, run, record, sources.get(run.key))
        lines.append(f"{run.name}: {state}")
        total += 1
        done += left == 0 and record is not None
        short += left > 0 and record is not None
        if left and run.method in speeds:
            seconds += left * speeds[run.method]
        elif left:
            unknown.append(run.method)
    lines.append(
        f"{done} of {total} runs recorded"
        + (f", {short} more short of the raised budget" if short else "")
        + ("; later stages wait on these (tuned settings)" if None in known else "")
    )
    if seconds:
        lines.append(
            f"training left: about {seconds / 3600:.1f} h on one worker at the recorded runs' "
            "s/step, else timing.json's (scoring not counted)"
            + (f"; no recorded run yet of {', '.join(sorted(set(unknown)))}" if unknown else "")
        )
    return lines
