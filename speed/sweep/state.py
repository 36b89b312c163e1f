"""The sweep's index `sweep.yaml`: every run a sweep has named and where each phase stands.

Whether a run's phase is done, resumable or new is read from its files by
`speed.run.phase_state`; this index records it (and what is running or submitted).

`<experiment_dir>/sweep/sweep.yaml` lists every run a sweep command has named (later commands
add theirs), with its folder, config file, overrides, swept values and, per phase, its status:
pending, running, done, interrupted (SIGTERM/SIGINT: checkpointed), failed or submitted (with
the SLURM job id).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

import yaml

from speed.errors import MissingFileError
from speed.run import DONE
from speed.sweep.expand import SWEEP_FOLDER, Sweep
from speed.utils.atomic import atomic_write

RECORD_FILE = "sweep.yaml"
RECORD_LOCK = ".sweep.yaml.lock"


def find_sweep_dir(path: str | os.PathLike) -> Path:
    """The sweep folder of an experiment_dir (`<path>/sweep`), or `path` itself if it is one."""
    path = Path(path)
    for folder in (path / SWEEP_FOLDER, path):
        if (folder / RECORD_FILE).is_file():
            return folder
    raise MissingFileError(
        f"no {SWEEP_FOLDER}/{RECORD_FILE} under {path}; give the experiment_dir of a sweep "
        "(run one with main.py -m first)"
    )


def read_record(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """The parsed sweep.yaml of `sweep_dir` ({} when there is none)."""
    path = Path(sweep_dir) / RECORD_FILE
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


@contextlib.contextmanager
def _record_locked(sweep_dir: str | os.PathLike):
    """Hold an exclusive flock on the sweep folder's lock file, so that the read-modify-write
    of sweep.yaml by several workers (a study's shards starting together) loses no entry."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(sweep_dir) / RECORD_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_sweep(sweep: Sweep, states: list[str]) -> dict[str, Any]:
    """Add the sweep's runs to its sweep.yaml; runs already listed keep their statuses, except
    that runs found DONE on disk (e.g. by a SLURM job) are marked done."""
    with _record_locked(sweep.sweep_dir):
        return _add_runs(sweep, states)


def _add_runs(sweep: Sweep, states: list[str]) -> dict[str, Any]:
    record = read_record(sweep.sweep_dir)
    runs = {entry["name"]: entry for entry in record.get("runs", [])}
    for run, state in zip(sweep.runs, states):
        entry = runs.setdefault(run.name, {"name": run.name, "status": {}})
        entry.update(
            dir=str(run.run_dir(sweep.sweep_dir)),
            config=str(run.config),
            overrides=list(run.overrides),
            params=run.params,
        )
        entry["status"].setdefault(sweep.phase, "pending")
        if state == DONE:
            entry["status"][sweep.phase] = DONE
    keys = list(dict.fromkeys([*record.get("keys", []), *sweep.keys]))
    record.update(config=str(sweep.config), keys=keys, runs=list(runs.values()))
    _write_record(sweep.sweep_dir, record)
    return record


def set_status(sweep_dir: Path, name: str, phase: str, status: str, job: str | None = None):
    """Record `status` (and a SLURM job id) of run `name` in `phase`."""
    with _record_locked(sweep_dir):
        record = read_record(sweep_dir)
        entry = next(e for e in record["runs"] if e["name"] == name)
        entry["status"][phase] = status
        if job is not None:
            entry.setdefault("jobs", {})[phase] = job
        _write_record(sweep_dir, record)


def recorded_job(sweep_dir: Path, name: str, phase: str) -> str | None:
    """The SLURM job id last submitted for run `name` in `phase`, if any."""
    for entry in read_record(sweep_dir).get("runs", []):
        if entry["name"] == name:
            return entry.get("jobs", {}).get(phase)
    return None


def _write_record(sweep_dir: Path, record: dict) -> None:
    text = yaml.safe_dump(record, sort_keys=False, default_flow_style=None)
    atomic_write(Path(sweep_dir) / RECORD_FILE, text)
