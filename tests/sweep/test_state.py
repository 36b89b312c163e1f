"""speed/sweep/state.py: sweep.yaml keeps every run when several workers write it at once (a
study's shards start together and each adds the run it claimed)."""

import multiprocessing
from pathlib import Path

from omegaconf import OmegaConf

from speed.sweep.expand import Sweep, SweepRun
from speed.sweep.state import read_record, record_sweep, set_status

WORKERS = 4
RUNS_EACH = 15


def one_run_sweep(sweep_dir: Path, name: str) -> Sweep:
    run = SweepRun(name=name, config=Path("c.yaml"), overrides=(), params={"k": name})
    return Sweep(Path("c.yaml"), "train", sweep_dir, ("k",), (run,), OmegaConf.create({}))


def add_and_mark(sweep_dir: Path, worker: int, start) -> None:
    start.wait()
    for i in range(RUNS_EACH):
        name = f"w{worker}-{i}"
        record_sweep(one_run_sweep(sweep_dir, name), ["new"])
        set_status(sweep_dir, name, "train", "running")  # raised StopIteration when lost


def test_workers_adding_runs_together_lose_none(tmp_path):
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WORKERS)
    workers = [
        context.Process(target=add_and_mark, args=(tmp_path, w, start)) for w in range(WORKERS)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [p.exitcode for p in workers] == [0] * WORKERS
    entries = {e["name"]: e["status"] for e in read_record(tmp_path)["runs"]}
    expected = {f"w{w}-{i}" for w in range(WORKERS) for i in range(RUNS_EACH)}
    assert set(entries) == expected
    assert all(status == {"train": "running"} for status in entries.values())
