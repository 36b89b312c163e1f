"""What the SpeeD study runs and in which order, and its records (`benchmarks/speedup.py` runs it).

A plan per backbone (`PLANS`); the grid of timestep sampling x loss weighting x learning rate x
seed as one sweep; the stages that pick the next runs from the finished ones (each method's
learning rate is chosen on its own seed-0 runs); the finished runs' records.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from models_forward import device_name

from speed.sweep.expand import Sweep, SweepRun, expand_sweep
from speed.utils.atomic import atomic_write

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs" / "image" / "animals"
DOMAIN_CLASSIFIER = ROOT / "benchmarks" / "assets" / "domain_classifier.pt"
SAMPLINGS = ("uniform", "speed", "tanh")
WEIGHTINGS = ("none", "speed", "p2")
NAMED = {  # method -> (diffusion.sampling, diffusion.weighting)
    "baseline": ("uniform", "none"),
    "speed_paper": ("speed", "speed"),
    "speed_released": ("tanh", "p2"),
}
PARTS = {  # the paper's SpeeD split into its two parts, each alone: the cells that credit a gain
    "speed_sampling_only": ("speed", "none"),
    "speed_weighting_only": ("uniform", "speed"),
}
RELEASED_PARTS = {  # the released variant's two parts, each alone: reported, seed 0 only
    "tanh_sampling_only": ("tanh", "none"),
    "p2_weighting_only": ("uniform", "p2"),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to train and how to score it (per backbone: `PLANS`)."""

    config: str  # the experiment file under configs/image/animals/
    steps: int  # optimizer steps of every run
    eval_every: int  # checkpoint and domain-FID interval
    lrs: tuple[float, ...]  # the fairness grid of AdamW learning rates
    seeds: tuple[int, ...] = (0, 1, 2)
    g1_every: int = 1000  # interval of the guidance-1 scores
    num_samples: int = 256  # generated images per scored checkpoint
    final_samples: int = 1000  # generated images at the last checkpoint (domain + Inception)
    num_reference: int = 1000  # real images for the domain reference statistics
    sampling: tuple[str, ...] = ("sampler=ddim", "num_steps=25", "eta=1.0")  # the demo's
    guidance: float = 2.0  # the demo's guidance scale
    sampling_seed: int = 0  # per-image sampling seeds, the same for every run
    noise_seeds: tuple[int, ...] = (1, 2)  # other sampling seeds, to measure the scores' noise
    region_images: int = 500  # held-out images for the loss-per-region probe
    extra: tuple[str, ...] = ()  # overrides for every run (the DiT's size)
    # the other seeds of every named method at the common rate, where that is not its own: a
    # comparison at shared settings beside the one at each method's best rate
    shared_rate_seeds: bool = False
    credit_cells: bool = True  # the grid's other cells and the parts' other seeds

    @property
    def checkpoint_steps(self) -> list[int]:
        return list(range(self.eval_every, self.steps + 1, self.eval_every))


PLANS = {
    # The demo UNet (1.19M params): its baseline still improves at 2000 steps (domain FID 19.3,
    # 18.0 at 2400), so twice that; 0.33 s a step on 2 cores, about 50 min a run with scoring.
    "unet": Plan(config="base.yaml", steps=4000, eval_every=500, lrs=(2.0e-3, 1.0e-3)),
    # The demo's DiT variant (4.18M params), which learns its classes far later than the UNet:
    # the named methods only (about 55 min a run here); the UNet's grid credits the parts. Its
    # lr 2e-3 proved unstable (loss spikes in the baseline's seeds 1 and 2 and the paper's
    # SpeeD's seed 0), so every method also runs all seeds at the common rate.
    "dit": Plan(
        config="dit.yaml",
        steps=6000,
        eval_every=750,
        lrs=(2.0e-3, 1.0e-3),
        shared_rate_seeds=True,
        credit_cells=False,
    ),
}


# ---- the runs: a sweep over the grid, done in stages ----


@dataclasses.dataclass(frozen=True)
class StudyRun:
    sweep_run: SweepRun
    sampling: str
    weighting: str
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return self.sweep_run.name

    @property
    def method(self) -> str | None:
        """The named method of this cell, if it is one."""
        cell = (self.sampling, self.weighting)
        return next((m for m, c in NAMED.items() if c == cell), None)


def study_sweep(plan: Plan, runs_dir: Path, overrides: list[str]) -> Sweep:
    """The full grid x learning rates x seeds as one sweep (only a part of it is ever run)."""
    words = [
        f"diffusion.sampling={','.join(SAMPLINGS)}",
        f"diffusion.weighting={','.join(WEIGHTINGS)}",
        f"optimizer.lr={','.join(str(lr) for lr in plan.lrs)}",
        f"seed={','.join(str(s) for s in plan.seeds)}",
        f"experiment_dir={runs_dir}",
        f"max_training_steps={plan.steps}",
        f"ckpt_every={plan.eval_every}",
        "ckpt_keep=0",
        "sample_every=0",
        "log_every=100",
        "wandb=disabled",
        *plan.extra,
        *overrides,
    ]
    return expand_sweep(CONFIGS / plan.config, "train", words)


def study_runs(sweep: Sweep) -> dict[tuple, StudyRun]:
    """(sampling, weighting, lr, seed) -> the sweep's run."""
    runs = {}
    for run in sweep.runs:
        p = run.params
        key = (
            p["diffusion.sampling"],
            p["diffusion.weighting"],
            float(p["optimizer.lr"]),
            p["seed"],
        )
        runs[key] = StudyRun(run, *key)
    return runs


def by_cell(records: dict[str, dict]) -> dict[tuple, dict]:
    """(sampling, weighting, lr, seed) -> record, of run name -> record."""
    return {(r["sampling"], r["weighting"], float(r["lr"]), r["seed"]): r for r in records.values()}


def choose_lr(cells: dict[tuple, dict], plan: Plan, method: str) -> float | None:
    """The method's learning rate: the lowest final FID (`final_samples` images) of its seed-0
    runs over the plan's rates; None until all of those runs have finished."""
    finals = {}
    for lr in plan.lrs:
        record = cells.get((*NAMED[method], lr, plan.seeds[0]))
        if record is None:
            return None
        finals[lr] = record["final"]["domain"]["fid"]
    return min(finals, key=finals.get)


def common_lr(chosen: dict[str, float | None], plan: Plan) -> float | None:
    """The rate most named methods chose (ties: the smaller); None while any is undecided."""
    if any(lr is None for lr in chosen.values()):
        return None
    votes = list(chosen.values())
    return min(plan.lrs, key=lambda lr: (-votes.count(lr), lr))


def stages(
    plan: Plan, runs: dict[tuple, StudyRun], records: dict
) -> Iterator[list[StudyRun] | None]:
    """The study's runs in order, stage by stage; runs that depend on unfinished runs are not known
    yet, and a None stands where they would be."""
    first = plan.seeds[0]
    yield [runs[(*cell, lr, first)] for lr in plan.lrs for cell in NAMED.values()]
    cells = by_cell(records)
    chosen = {m: choose_lr(cells, plan, m) for m in NAMED}
    yield [
        runs[(*NAMED[m], chosen[m], seed)]
        for seed in plan.seeds[1:]
        for m in NAMED
        if chosen[m] is not None
    ]
    lr = common_lr(chosen, plan)
    if lr is None:
        yield None  # the other seeds of a method whose rate is not chosen yet, and what follows
        return
    if plan.shared_rate_seeds:
        yield [runs[(*NAMED[m], lr, s)] for s in plan.seeds[1:] for m in NAMED if chosen[m] != lr]
    if plan.credit_cells:
        others = [(s, w) for s in SAMPLINGS for w in WEIGHTINGS if (s, w) not in NAMED.values()]
        yield [runs[(*cell, lr, first)] for cell in others]
        yield [runs[(*c, lr, s)] for s in plan.seeds[1:] for c in PARTS.values()]


def pending(plan: Plan, runs, records) -> tuple[list[StudyRun], bool]:
    """Runs not yet recorded, in study order, and whether later stages still wait on them (their
    runs are not known until the runs they depend on are recorded)."""
    known = list(stages(plan, runs, records))
    todo = [r for stage in known if stage is not None for r in stage if r.name not in records]
    return todo, None in known


# ---- the records of finished runs ----


def machine() -> str:
    return f"{device_name('cpu')}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def load_records(folder: Path) -> dict[str, dict]:
    """Run name -> finished record, of every record in `folder`."""
    records = (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))
    return {record["name"]: record for record in records}


def write_record(folder: Path, record: dict) -> Path:
    return atomic_write(folder / f"{record['name']}.json", json.dumps(record, indent=2) + "\n")
