"""Every method's cost per optimizer step measured on this machine, so that a report's wall-clock
speed-ups compare one box's seconds (`python -m speed.study STUDY.yaml --time`; docs/study.md).

A study's records carry the training seconds of whatever machine trained each run, under
whatever load; seconds from different boxes do not compare. This pass builds each method's
training config as the study does (its chosen setting, else the first; its first seed) and times
short bursts of training in a temporary folder (nothing kept): `warmup` steps not counted, then
`rounds` rounds of `steps` optimizer steps, the median of the rounds' seconds per step.

A step's cost can change during training (MaskDiT trains unmasked from `model.unmask_at_step`):
the stages are cut where a key of STAGE_KEYS sets a step inside the budget, one burst is timed at
the start of each stage, and each interval of the speed-up curve (split at the stage boundaries)
gets the cost of its stage. Writes `<records>/timing.json`; the report reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import statistics
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from speed.run import RunDir
from speed.runners.train import train
from speed.study.plan import (
    TIMING_FILE,
    by_key,
    chosen_settings,
    common_setting,
    load_records,
    machine,
    study_runs,
)
from speed.study.spec import Study
from speed.sweep.expand import Sweep, load_run_configs
from speed.utils.atomic import atomic_write
from speed.utils.logging import read_metrics
from speed.utils.machine import load_average, utc_now

STAGE_KEYS = ("model.unmask_at_step",)  # config keys naming the step where a step's cost changes


def curve_starts(study: Study) -> list[int]:
    """The first steps of the speed-up curve's intervals: 0, every, 2 every, ... below the
    budget."""
    every = study.score.curve(study.score.speedup_metric[0]).every
    return list(range(0, study.steps, every))


def stage_starts(cfg, steps: int) -> list[int]:
    """The steps where a stage of training begins: 0, and each STAGE_KEYS value inside (0,
    steps)."""
    inside = set()
    for key in STAGE_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and 0 < int(value) < steps:
            inside.add(int(value))
    return [0, *sorted(inside)]


def interval_stages(starts: list[int], stages: list[int]) -> dict[int, int]:
    """Interval start -> the first step of the stage it lies in. The intervals are those of
    `starts` split at the stage boundaries, so that none spans two stages."""
    points = sorted(set(starts) | {s for s in stages if s >= min(starts)})
    return {p: max(s for s in stages if s <= p) for p in points}


def seconds_to(sec_per_step: dict[int, float], step: int) -> float:
    """Training seconds to reach `step`: the steps of each interval (from its start to the next
    one's, the last open-ended) up to `step`, times that interval's seconds per step."""
    starts = sorted(sec_per_step)
    total = 0.0
    for start, end in zip(starts, [*starts[1:], None]):
        stop = step if end is None else min(step, end)
        total += max(0, stop - start) * sec_per_step[start]
    return total


def round_seconds(per_step: list[float], warmup: int, steps: int, rounds: int) -> float:
    """Median over `rounds` rounds of `steps` steps (after `warmup`) of a round's mean seconds
    per step."""
    timed = per_step[warmup : warmup + steps * rounds]
    if len(timed) < steps * rounds:
        raise RuntimeError(f"a burst logged {len(per_step)} steps, {warmup + steps * rounds} asked")
    return statistics.median(
        statistics.fmean(timed[i * steps : (i + 1) * steps]) for i in range(rounds)
    )


def timed_runs(study: Study, sweep: Sweep) -> dict:
    """method -> the run its timing builds: its chosen setting (until chosen, and for untuned
    methods, the common one, else the grid's first), its first seed."""
    runs = study_runs(study, sweep)
    cells = by_key(runs, load_records(study.records_dir))
    chosen = chosen_settings(study, cells)
    common = common_setting(study, chosen) if chosen else study.settings[0]
    out = {}
    for method in study.methods.values():
        setting = (chosen.get(method.name) if method.tuned else common) or study.settings[0]
        out[method.name] = runs[(method.name, setting, method.seeds[0])]
    return out


def burst(sweep: Sweep, run, start: int, warmup: int, steps: int, rounds: int) -> float:
    """Median seconds per step of `rounds` rounds of `steps` steps of `run`'s training from step
    `start` (after `warmup` steps), in a temporary folder removed afterwards."""
    count = warmup + steps * rounds
    with tempfile.TemporaryDirectory(prefix="speed-time-") as folder:
        (plain,) = load_run_configs(dataclasses.replace(sweep, runs=(run.sweep_run,)))
        anneal = plain.lr_anneal_steps or plain.max_training_steps  # the study's lr schedule
        words = (
            f"max_training_steps={start + count}", "max_training_seconds=0",
            f"lr_anneal_steps={anneal}", "log_every=1", f"ckpt_every={start + count}",
            "ckpt_keep=0", "sample_every=0", "tensorboard=false", "wandb=disabled",
            "resume=false",
        )  # fmt: skip
        timing_sweep = dataclasses.replace(sweep, runs=(run.sweep_run,), sweep_dir=Path(folder))
        (cfg,) = load_run_configs(timing_sweep, words)
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg, start_step=start)
        rows = read_metrics(RunDir.of(cfg).logs)
    per_step = [r["sec_per_step"] for r in sorted(rows, key=lambda r: r["step"])]
    return round_seconds(per_step, warmup, steps, rounds)


def time_study(study: Study, sweep: Sweep, command: str, steps: int = 4, rounds: int = 3,
               warmup: int = 2) -> Path:  # fmt: skip
    """Time every method's stages on this machine; write and return `<records>/timing.json`."""
    loads = load_average()
    methods = {}
    starts = curve_starts(study)
    for name, run in timed_runs(study, sweep).items():
        (cfg,) = load_run_configs(dataclasses.replace(sweep, runs=(run.sweep_run,)))
        stages = stage_starts(cfg, study.steps)
        costs = {}
        for start in stages:
            costs[start] = burst(sweep, run, start, warmup, steps, rounds)
            print(f"{name} from step {start}: {costs[start]:.4f} s/step ({run.name})", flush=True)
        intervals = interval_stages(starts, stages)
        methods[name] = {
            "sec_per_step": {str(s): costs[stage] for s, stage in intervals.items()},
            "stages": {str(s): costs[s] for s in stages},
            "run": run.name,
            "setting": dict(run.setting),
            "seed": run.seed,
        }
    timing = {
        "machine": machine(),
        "date": utc_now(),
        "command": command,
        "threads": torch.get_num_threads(),
        "load_average": loads,
        "load_average_after": load_average(),
        "burst": {"warmup": warmup, "steps": steps, "rounds": rounds},
        "methods": methods,
    }
    path = Path(study.records_dir) / TIMING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(timing, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def load_timing(study: Study) -> dict | None:
    """`<records>/timing.json` (None where there is none), its intervals as int steps."""
    path = Path(study.records_dir) / TIMING_FILE
    if not path.is_file():
        return None
    timing = json.loads(path.read_text())
    for entry in timing["methods"].values():
        entry["sec_per_step"] = {int(s): v for s, v in entry["sec_per_step"].items()}
    return timing
