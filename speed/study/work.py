"""Doing a study's runs: claim a run, train it (resuming), score it, write its record; several
workers share one study through the claims, and a stopped study resumes with the same command.

A run's finished record (`<records>/<run>.json`) skips it altogether; its checkpoints and cached
scores resume it. A claim is a `speed.run.RunLock` file in the run's folder: a live worker's
claim is respected, a dead one's (a killed study) is taken over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import statistics
import time
from pathlib import Path

from speed.errors import Interrupted
from speed.run import DONE, RunDir, RunLock, list_checkpoints, phase_state
from speed.runners.train import train
from speed.study.plan import (
    PROBE_FIELDS,
    StudyRun,
    check_extension,
    copy_sources,
    final_step,
    load_records,
    machine,
    pending,
    study_runs,
    write_record,
)
from speed.study.regions import region_losses
from speed.study.scoring import Scorer
from speed.study.spec import Study
from speed.sweep.expand import Sweep, load_run_configs
from speed.sweep.state import record_sweep, set_status
from speed.utils.logging import read_metrics

CLAIM_FILE = ".study-claim"
REPO = Path(__file__).resolve().parents[2]


class StudyInterrupted(Exception):
    """A run's training stopped early (it saved a checkpoint); the study resumes from there when
    started again."""


def claim(run_dir: Path) -> bool:
    """Take the run for this process (again, if it holds it already); False if another live
    process holds it. A claim of a process that no longer runs on this host is taken over."""
    lock = RunLock(run_dir, CLAIM_FILE)
    return lock.holder() == lock.me or lock.try_acquire()


def release(run_dir: Path) -> None:
    RunLock(run_dir, CLAIM_FILE).release()


# ---- one run ----


def do_run(
    study: Study, run: StudyRun, sweep: Sweep, scorer: Scorer, probe: bool, recorded: int = 0
) -> dict:
    """Train (resuming) and score one run; returns its record. `recorded`: the steps of its
    record when the study's budget has been raised since (it trains on from there)."""
    (cfg,) = load_run_configs(dataclasses.replace(sweep, runs=(run.sweep_run,)), ("resume=true",))
    if recorded:
        check_extension(run.name, cfg, recorded)
    if phase_state("train", cfg) != DONE:
        set_status(sweep.sweep_dir, run.name, "train", "running")
        with contextlib.suppress(Interrupted):  # SIGTERM/SIGINT: checkpointed, resumes later
            train(cfg)
    if phase_state("train", cfg) != DONE:  # stopped early (SIGTERM/SIGINT saved a checkpoint)
        set_status(sweep.sweep_dir, run.name, "train", "pending")
        limit = f" or {study.seconds:g} s of training" if study.seconds else ""
        raise StudyInterrupted(f"{run.name}: training stopped before step {study.steps}{limit}")
    set_status(sweep.sweep_dir, run.name, "train", DONE)
    rows = read_metrics(RunDir.of(cfg).logs)
    final = final_step(study, RunDir.of(cfg).root)
    record = {
        "name": run.name,
        "method": run.method,
        "setting": dict(run.setting),
        "seed": run.seed,
        "steps": final,
        "sec_per_step": mean_sec_per_step(rows),
        "seconds": {
            str(s): v for s, v in training_seconds(rows, study.run_steps(final)).items()
        },  # fmt: skip
        "final_loss": next((r["loss"] for r in reversed(rows) if "loss" in r), None),
    }
    for curve in study.score.curves:
        steps = study.curve_steps(curve, final)
        record[curve.name] = {str(s): m for s, m in scorer.curve(run, curve, steps).items()}
    record["final"] = scorer.final(run, final)
    if study.score.region_images:
        words = run.sweep_run.words(sweep.sweep_dir)
        record["region_losses"] = region_losses(
            run.sweep_run.config, words, study.score.region_images
        )
    if probe and study.score.noise_seeds:
        record["noise_probe"] = scorer.noise_probe(run, final)
    record.update(machine=machine(), date=datetime.date.today().isoformat())
    return record


def mean_sec_per_step(rows: list[dict]) -> float | None:
    """Mean `sec_per_step` of a training log's lines (all attempts)."""
    values = [row["sec_per_step"] for row in rows if "sec_per_step" in row]
    return statistics.fmean(values) if values else None


def training_seconds(rows: list[dict], steps: list[int]) -> dict[int, float]:
    """step -> wall-clock seconds of training up to that step, from the log's `sec_per_step`
    (each line's mean over the steps since the line before; a step logged twice, by a run that
    resumed from an earlier checkpoint, counts once, its last line). Steps past the log: left
    out."""
    logged = {row["step"]: row["sec_per_step"] for row in rows if "sec_per_step" in row}
    elapsed, previous, cumulative = 0.0, 0, []
    for step in sorted(logged):
        elapsed += (step - previous) * logged[step]
        cumulative.append((step, elapsed, logged[step]))
        previous = step
    out = {}
    for step in steps:
        done = [(s, e) for s, e, _ in cumulative if s <= step]
        after = next(((s, sps) for s, _, sps in cumulative if s > step), None)
        base_step, base = done[-1] if done else (0, 0.0)
        if base_step == step:
            out[step] = base
        elif after is not None:
            out[step] = base + (step - base_step) * after[1]
    return out


# ---- runs of another study (same_as) ----


def copied_record(study: Study, run: StudyRun, source: Path) -> dict:
    """The other study's record at `source` as this study's run `run`: its name and method, and
    `copied_from` (the source's path from the repository's root); probes this study does not ask
    for are left out."""
    record = json.loads(Path(source).read_text())
    record.update(name=run.name, method=run.method, copied_from=repo_path(source))
    for key, field in PROBE_FIELDS.items():
        if not getattr(study.score, key):
            record.pop(field, None)
    return record


def repo_path(path: Path) -> str:
    """`path` from the repository's root (absolute when outside it)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def copy_ready(study: Study, todo: list[StudyRun], sources: dict, told: set) -> list[StudyRun]:
    """Write the record of each `same_as` run in `todo` whose source record exists; say once per
    run which wait for theirs. Returns the runs still waiting."""
    waiting = []
    for run in (r for r in todo if r.key in sources):
        source = sources[run.key]
        if source.is_file():
            path = write_record(study.records_dir, copied_record(study, run, source))
            print(f"   copied {repo_path(source)} to {path}", flush=True)
            continue
        waiting.append(run)
        if run.key not in told:
            told.add(run.key)
            same_as = study.methods[run.method].same_as
            print(
                f"waiting for {same_as.study}'s {same_as.method} seed {run.seed}: run that study",
                flush=True,
            )
    return waiting


# ---- the study ----


def worker_share(todo: list[StudyRun], sweep: Sweep, shard: tuple[int, int]) -> list[StudyRun]:
    """The runs this worker tries, in order: first every run that has a checkpoint (a stopped
    study's unfinished runs, whichever worker began them), then its shard of the rest (all of
    the rest once its shard is empty). Runs another worker holds are skipped by the claim."""
    index, count = shard

    def begun(run: StudyRun) -> bool:
        return bool(list_checkpoints(RunDir(run.sweep_run.run_dir(sweep.sweep_dir)).checkpoints))

    started, rest = [], []
    for run in todo:
        (started if begun(run) else rest).append(run)
    return started + ([r for i, r in enumerate(rest) if i % count == index] or rest)


def work(study: Study, sweep: Sweep, scorer: Scorer, shard: tuple[int, int] = (0, 1),
         poll_seconds: float = 60.0) -> int:  # fmt: skip
    """Do this worker's share of the study until nothing is left; returns the runs it did."""
    runs = study_runs(study, sweep)
    probed = runs[(study.reference, study.settings[0], study.methods[study.reference].seeds[0])]
    sources, told = copy_sources(study), set()
    done = 0
    while True:
        records = load_records(study.records_dir)
        todo, waiting = pending(study, runs, records)
        copies = copy_ready(study, todo, sources, told)  # never trained here
        todo = [r for r in todo if r.key not in sources]
        mine = worker_share(todo, sweep, shard)
        run = next((r for r in mine if claim(r.sweep_run.run_dir(sweep.sweep_dir))), None)
        if run is None:
            if not todo and not waiting:
                if copies:
                    print(
                        f"{len(copies)} run(s) wait for other studies' records (above): run "
                        "those studies, then this command again to copy them",
                        flush=True,
                    )
                return done
            time.sleep(poll_seconds)  # the rest is claimed or waits on other workers' runs
            continue
        run_dir = run.sweep_run.run_dir(sweep.sweep_dir)
        try:
            record_sweep(dataclasses.replace(sweep, runs=(run.sweep_run,)), ["new"])
            print(f"== {run.name} ({len(todo)} run(s) left in the study)", flush=True)
            short = records.get(run.name, {}).get("steps", 0)
            if short:
                print(f"   recorded at {short} steps: trains on to {study.steps}", flush=True)
            record = do_run(study, run, sweep, scorer, run.key == probed.key, recorded=short)
            print(f"   recorded {write_record(study.records_dir, record)}", flush=True)
            done += 1
        finally:
            release(run_dir)
