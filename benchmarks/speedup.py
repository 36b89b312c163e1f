"""SpeeD's training speed-up as a study: timestep sampling x loss weighting, seeds, trained far.

    python benchmarks/speedup.py --backbone unet                      # the whole study, here
    python benchmarks/speedup.py --backbone unet --shard 0/2 --threads 1 &   # or two workers
    python benchmarks/speedup.py --backbone unet --shard 1/2 --threads 1 &   # sharing the runs
    python benchmarks/speedup.py --backbone unet --report             # tables and figures

Every run trains the demo experiment (configs/image/animals/base.yaml, or dit.yaml for
`--backbone dit`) and differs from the others only in the cell of the grid

    diffusion.sampling  in  uniform | speed | tanh
    diffusion.weighting in  none    | speed | p2

and its seed and learning rate. Three cells are the named methods: the baseline (uniform, none),
SpeeD as in the paper (speed, speed: `diffusion.faster=true`) and SpeeD as in the authors'
released code (tanh, p2); the other six say which part makes a difference (P2 alone is a prior
method).

The study is a sweep (`speed.sweep`: one folder per combination under `<runs>/sweep/`, its
`sweep.yaml`, `resume=true` training) done in this order, each stage after the one before:
  1. the named methods, seed 0, at every learning rate of the plan (the fairness grid: each
     method then uses the rate with the lowest final FID, chosen on its own runs);
  2. the named methods, the other seeds, each at its chosen rate;
  2b. with `shared_rate_seeds` (the DiT's plan), the other seeds of every named method at the
     rate most named methods chose, where that is not its own: all methods compared at shared
     settings too;
  3. the six other cells, seed 0, at the rate most named methods chose;
  4. the other seeds of the two cells that hold one part of the paper's SpeeD alone (its
     sampling with unweighted loss; uniform sampling with its weights), at that rate: the
     paper's curves are noisy mid-training, so crediting a gain or a loss to a part needs seeds.
A plan without `credit_cells` (the DiT's) stops before stage 3.
Every run is scored as it finishes: domain-classifier FID and class accuracy of 256 samples at
every checkpoint with the demo's sampler (DDIM-25, eta 1, guidance 2) and every `g1_every` steps
with guidance 1; at the end 1000 samples scored with the domain features and with Inception; the
eps-MSE of the final EMA model per tenth of t on held-out images. All sampling uses the same
seeds, so curves differ by the model only.

Nothing is done twice: a run's finished record (`<results>/speedup_<backbone>/<run>.json`, kept
in the repository) skips it altogether, its checkpoints and cached scores resume it. Workers
(`--shard i/n`) claim a run by a file in its folder, so several can share one study.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import statistics
import time
from pathlib import Path

import speedup_report
import torch
from speedup_plan import (
    DOMAIN_CLASSIFIER,
    NAMED,
    PLANS,
    RESULTS,
    ROOT,
    Plan,
    StudyRun,
    load_records,
    machine,
    pending,
    study_runs,
    study_sweep,
    write_record,
)
from speedup_scoring import Scorer, region_losses

from speed.errors import Interrupted
from speed.run import DONE, RunDir, RunLock, list_checkpoints, phase_state
from speed.runners.train import train
from speed.sweep.expand import Sweep, load_run_configs
from speed.sweep.state import record_sweep, set_status
from speed.utils.logging import read_metrics

# ---- claiming a run (several workers share one study) ----

CLAIM_FILE = ".study-claim"


def claim(run_dir: Path) -> bool:
    """Take the run for this process (again, if it holds it already); False if another live
    process holds it. A claim of a process that no longer runs on this host is taken over."""
    lock = RunLock(run_dir, CLAIM_FILE)
    return lock.holder() == lock.me or lock.try_acquire()


def release(run_dir: Path) -> None:
    RunLock(run_dir, CLAIM_FILE).release()


# ---- one run: train, score, record ----


class StudyInterrupted(Exception):
    """A run's training was stopped (it saved a checkpoint); the study ends here and resumes
    from that checkpoint when started again."""


def do_run(run: StudyRun, sweep: Sweep, scorer: Scorer, noise_probe: bool) -> dict:
    """Train (resuming) and score one run; returns its record."""
    plan = scorer.plan
    (cfg,) = load_run_configs(dataclasses.replace(sweep, runs=(run.sweep_run,)), ("resume=true",))
    start = time.perf_counter()
    if phase_state("train", cfg) != DONE:
        set_status(sweep.sweep_dir, run.name, "train", "running")
        with contextlib.suppress(Interrupted):  # SIGTERM/SIGINT: checkpointed, resumes later
            train(cfg)
    if phase_state("train", cfg) != DONE:  # stopped early (SIGTERM/SIGINT saved a checkpoint)
        set_status(sweep.sweep_dir, run.name, "train", "pending")
        raise StudyInterrupted(f"{run.name}: training stopped before step {plan.steps}")
    set_status(sweep.sweep_dir, run.name, "train", DONE)
    train_seconds = time.perf_counter() - start
    g1_steps = [s for s in plan.checkpoint_steps if s % plan.g1_every == 0 or s == plan.steps]
    record = {
        "name": run.name,
        "method": run.method,
        "sampling": run.sampling,
        "weighting": run.weighting,
        "lr": run.lr,
        "seed": run.seed,
        "steps": plan.steps,
        "extractor": scorer.domain.name,
        "train_seconds_this_attempt": round(train_seconds, 1),
        "sec_per_step": _mean_sec_per_step(RunDir.of(cfg)),
        "curve": _str_keys(scorer.curve(run, sweep, plan.checkpoint_steps, plan.guidance)),
        "curve_guidance1": _str_keys(scorer.curve(run, sweep, g1_steps, 1.0)),
        "final": scorer.final(run, sweep),
        "region_losses": region_losses(
            run.sweep_run.config, run.sweep_run.words(sweep.sweep_dir), plan.region_images
        ),
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
    }
    if noise_probe:  # the same checkpoint, other sampling seeds: how noisy is a 256-sample FID?
        record["noise_probe"] = {
            str(seed): scorer.curve(run, sweep, [plan.steps], plan.guidance, seed)[plan.steps]
            for seed in plan.noise_seeds
        }
    return record


# ---- the study ----


def worker_share(todo: list[StudyRun], sweep: Sweep, shard: tuple[int, int]) -> list[StudyRun]:
    """The runs this worker tries, in order: first every run that has a checkpoint (a stopped
    study's unfinished runs, whichever worker began them), so that a restarted study finishes
    what it began before it starts anything new; then its shard of the rest (all of the rest
    once its shard is empty). Runs another worker holds are skipped by the claim."""
    index, count = shard

    def begun(run: StudyRun) -> bool:
        return bool(list_checkpoints(RunDir(run.sweep_run.run_dir(sweep.sweep_dir)).checkpoints))

    started, rest = [], []
    for run in todo:  # one look at each run's checkpoints
        (started if begun(run) else rest).append(run)
    return started + ([r for i, r in enumerate(rest) if i % count == index] or rest)


def work(plan: Plan, sweep: Sweep, records_dir: Path, scorer: Scorer, shard: tuple[int, int],
         poll_seconds: float = 60.0) -> int:  # fmt: skip
    """Do this worker's share of the study until nothing is left; returns the runs it did."""
    runs = study_runs(sweep)
    first_named = runs[(*NAMED["baseline"], plan.lrs[0], plan.seeds[0])].name
    done = 0
    while True:
        records = load_records(records_dir)
        todo, waiting = pending(plan, runs, records)
        mine = worker_share(todo, sweep, shard)
        run = next((r for r in mine if claim(r.sweep_run.run_dir(sweep.sweep_dir))), None)
        if run is None:
            if not todo and not waiting:
                return done
            time.sleep(poll_seconds)  # the rest is claimed or waits on other workers' runs
            continue
        run_dir = run.sweep_run.run_dir(sweep.sweep_dir)
        try:
            record_sweep(dataclasses.replace(sweep, runs=(run.sweep_run,)), ["new"])
            print(f"== {run.name} ({len(todo)} run(s) left in the study)", flush=True)
            record = do_run(run, sweep, scorer, noise_probe=run.name == first_named)
            print(f"   recorded {write_record(records_dir, record)}", flush=True)
            done += 1
        finally:
            release(run_dir)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(PLANS), default="unet")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: runs/...)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--shard", default="0/1", help="i/n: this worker's share of the runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--report", action="store_true", help="only write the tables and figures")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (tests, trials)")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument(
        "--domain",
        default=str(DOMAIN_CLASSIFIER),
        help="domain classifier weights (default: the study's own, kept in the repository so "
        "that every machine scores with the same network)",
    )
    parser.add_argument("--inception", default=None, help="Inception weights (default_1.pt)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    return parser.parse_args(argv)


def plan_from_args(args) -> Plan:
    plan = PLANS[args.backbone]
    chosen = {"steps": args.steps, "eval_every": args.eval_every}
    plan = dataclasses.replace(plan, **{k: v for k, v in chosen.items() if v is not None})
    if plan.steps % plan.eval_every:
        raise SystemExit(f"error: steps={plan.steps} must be a multiple of eval_every")
    return plan


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise SystemExit(f"error: --shard {text!r}: write it as i/n, e.g. 0/2") from None
    if not 0 <= index < count:
        raise SystemExit(f"error: --shard {text!r}: i must lie in [0, n)")
    return index, count


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = plan_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs_dir = args.runs or ROOT / "runs" / "benchmarks" / f"speedup_{args.backbone}"
    records_dir = args.results / f"speedup_{args.backbone}"
    if not args.report:
        sweep = study_sweep(plan, runs_dir.resolve(), args.overrides)
        scorer = Scorer(plan, runs_dir.resolve(), args.domain, args.inception)
        try:
            work(plan, sweep, records_dir, scorer, parse_shard(args.shard))
        except StudyInterrupted as stop:
            print(f"study stopped: {stop}; run the same command to resume", flush=True)
            return 1
    records = load_records(records_dir)
    if not records:
        if not args.report:
            return 0
        print(f"no finished runs in {records_dir} yet: run without --report to start the study")
        return 1
    speedup_report.write_report(args.backbone, plan, records, args.results)
    return 0


def _mean_sec_per_step(run: RunDir) -> float | None:
    """Mean `sec_per_step` of the run's training log (all attempts)."""
    values = [row["sec_per_step"] for row in read_metrics(run.logs) if "sec_per_step" in row]
    return statistics.fmean(values) if values else None


def _str_keys(curve: dict) -> dict:
    return {str(k): v for k, v in curve.items()}


if __name__ == "__main__":
    raise SystemExit(main())
