"""Run a sweep: check every run first, then run them here one after another (`launcher=local`,
the way Hydra's BasicLauncher does) or submit one SLURM job per run (`launcher=slurm`).

Finished runs are skipped; train runs are always started with `resume=true`, so an unfinished one
continues from its newest checkpoint and a new one starts fresh. Under torchrun every rank walks
the same list and runs each run together; rank 0 keeps sweep.yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from speed.config import instantiate
from speed.errors import Interrupted, MissingFileError
from speed.run import DONE, RESUME, phase_state
from speed.sweep.expand import Sweep, expand_sweep, load_run_configs
from speed.sweep.slurm import (
    SlurmSettings,
    job_is_active,
    sbatch_script,
    submit_sbatch,
    torchrun_command,
)
from speed.sweep.state import record_sweep, recorded_job, set_status
from speed.utils.distributed import init_distributed

PHASE_WORDS = {"train": ("resume=true",)}  # added to each run's words, per phase


def plan_sweep(
    config_path: str | Path, phase: str, words: Iterable[str]
) -> tuple[Sweep, list[DictConfig]]:
    """The sweep's runs and their resolved configs, every one checked (nothing is written)."""
    sweep = expand_sweep(config_path, phase, words)
    return sweep, load_run_configs(sweep, PHASE_WORDS.get(phase, ()))


def run_sweep(
    config_path: str | Path,
    phase: str,
    words: Iterable[str],
    run_phase: Callable[[DictConfig], Any],
    script: Path,
) -> Sweep:
    """Run `phase` for every combination of the sweep `words` describes.

    Args:
        run_phase: runs one resolved config in this process (local launcher).
        script: main.py, the entry point SLURM jobs start under torchrun.
    """
    is_main = init_distributed().is_main
    sweep, configs = plan_sweep(config_path, phase, words)
    states = _states(sweep, configs)
    slurm = _slurm_settings(sweep.base) if sweep.base.get("launcher") == "slurm" else None
    if is_main:
        record_sweep(sweep, states)
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        print(f"sweep: {phase}, {len(states)} run(s) in {sweep.sweep_dir} ({counts})", flush=True)
    if slurm is None:
        _run_here(sweep, configs, states, run_phase, is_main)
    elif is_main:
        _submit_runs(sweep, states, slurm, script)
    return sweep


def _states(sweep: Sweep, configs: list[DictConfig]) -> list[str]:
    """Each run's state (`phase_state`); a run that cannot start (inference without a checkpoint)
    is an error naming it, before any run starts."""
    states = []
    for run, cfg in zip(sweep.runs, configs):
        try:
            states.append(phase_state(sweep.phase, cfg))
        except FileNotFoundError as err:
            raise MissingFileError(f"run '{run.name}': {err}") from None
    return states


def _run_here(sweep: Sweep, configs, states, run_phase, is_main: bool) -> None:
    """Each unfinished run in this process, in order; the first failure stops the sweep."""
    for i, (run, cfg, state) in enumerate(zip(sweep.runs, configs, states), start=1):
        label = f"[{i}/{len(configs)}] {run.name}"
        if state == DONE:
            _say(is_main, f"{label}: finished, skipped")
            continue
        _say(is_main, f"{label}: {'resuming' if state == RESUME else 'starting'} {sweep.phase}")
        _mark(is_main, sweep, run.name, "running")
        try:
            run_phase(cfg)
        except Interrupted:  # checkpointed: the same command resumes it
            _mark(is_main, sweep, run.name, "interrupted")
            raise
        except BaseException:
            _mark(is_main, sweep, run.name, "failed")
            raise
        _mark(is_main, sweep, run.name, DONE)


def _submit_runs(sweep: Sweep, states, settings: SlurmSettings, script: Path) -> None:
    """One job script per unfinished run, under `<run dir>/slurm/`, submitted unless
    `slurm.submit=false`; a run whose last job is still queued or running is left alone."""
    extra = PHASE_WORDS.get(sweep.phase, ())
    for i, (run, state) in enumerate(zip(sweep.runs, states), start=1):
        label = f"[{i}/{len(states)}] {run.name}"
        job = recorded_job(sweep.sweep_dir, run.name, sweep.phase)
        if state == DONE:
            print(f"{label}: finished, skipped")
            continue
        if job is not None and job_is_active(job):
            print(f"{label}: job {job} is still queued or running, skipped")
            continue
        folder = run.run_dir(sweep.sweep_dir) / "slurm"
        command = torchrun_command(
            settings, script, run.config, sweep.phase, run.words(sweep.sweep_dir, extra)
        )
        path = folder / f"{sweep.phase}.sbatch"
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(sbatch_script(settings, command, folder, f"{sweep.phase}:{run.name}"))
        if not settings.submit:
            print(f"{label}: wrote {path} (slurm.submit=false: not submitted)")
            continue
        job = submit_sbatch(path)
        set_status(sweep.sweep_dir, run.name, sweep.phase, "submitted", job=job)
        nodes = f"{settings.nodes} node(s) x {settings.procs_per_node} process(es)"
        print(f"{label}: submitted job {job} ({nodes}, {path})", flush=True)


def _slurm_settings(cfg: DictConfig) -> SlurmSettings:
    return instantiate(cfg.slurm) if "slurm" in cfg else SlurmSettings()


def _say(is_main: bool, text: str) -> None:
    if is_main:
        print(text, flush=True)


def _mark(is_main: bool, sweep: Sweep, name: str, status: str) -> None:
    if is_main:
        set_status(sweep.sweep_dir, name, sweep.phase, status)
