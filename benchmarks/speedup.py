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
import dataclasses
import datetime
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from models_forward import device_name

from evaluations import domain_classifier
from evaluations.evaluate import build_extractor, compute_metrics
from evaluations.image_io import load_npz
from evaluations.reference_cache import reference_stats
from speed.config import load_config
from speed.diffusion.timesteps import loss_by_region
from speed.experiments.curve import evaluate_run
from speed.experiments.export_reference import export_reference
from speed.run import DONE, RunDir, RunLock, checkpoint_stem, list_checkpoints, phase_state
from speed.runners.build import (
    build_autoencoder,
    build_dataset,
    build_diffusion,
    build_sampling_model,
)
from speed.runners.train import train
from speed.sweep.expand import Sweep, SweepRun, expand_sweep, load_run_configs
from speed.sweep.state import record_sweep, set_status
from speed.utils.atomic import atomic_write
from speed.utils.logging import read_metrics

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


def final_samples(plan: Plan, run_dir: RunDir) -> Path:
    """The .npz of the `final_samples` images a run's last checkpoint drew for its final score."""
    tag = f"domain_n{plan.final_samples}_g{plan.guidance:g}"
    return run_dir.curve_run(tag).inference_npz(checkpoint_stem(plan.steps))


class Scorer:
    """The extractors and reference statistics every run is scored against."""

    def __init__(
        self, plan: Plan, runs_dir: Path, domain_path=DOMAIN_CLASSIFIER, inception_path=None
    ):
        self.plan = plan
        self.domain = build_extractor(
            "domain", domain_path=domain_classifier.ensure_domain_classifier(domain_path)
        )
        self.domain_ref = self._reference(runs_dir, plan.num_reference, self.domain)
        self._inception_path = inception_path
        self._runs_dir = runs_dir
        self._inception = None

    @property
    def inception(self):
        """(extractor, reference stats) of Inception FID, built on first use."""
        if self._inception is None:
            extractor = build_extractor("inception", inception_path=self._inception_path)
            ref = self._reference(self._runs_dir, self.plan.final_samples, extractor)
            self._inception = (extractor, ref)
        return self._inception

    def _reference(self, runs_dir: Path, num: int, extractor):
        path = runs_dir / f"reference_{num}.npz"
        if not path.is_file():
            cfg = load_config(CONFIGS / self.plan.config, "inference", ["data.random_flip=false"])
            images, labels = export_reference(build_dataset(cfg), num)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, arr_0=images, arr_1=labels)
        return reference_stats(path, extractor, runs_dir / "reference_stats", progress=False)

    def sampling_words(self, guidance: float, seed: int | None = None) -> list[str]:
        seed = self.plan.sampling_seed if seed is None else seed
        return [*self.plan.sampling, f"guidance_scale={guidance}", f"seed={seed}"]

    def curve(self, run: StudyRun, sweep: Sweep, steps, guidance, seed=None, num=None) -> dict:
        """step -> {"fid", "class_accuracy"} of the run's checkpoints at `steps` (cached)."""
        num = num or self.plan.num_samples
        tag = f"domain_n{num}_g{guidance:g}" + ("" if seed is None else f"_seed{seed}")
        words = [*run.sweep_run.words(sweep.sweep_dir), *self.sampling_words(guidance, seed)]
        scored = evaluate_run(
            run.sweep_run.config, self.domain_ref, self.domain, num, words,
            progress=False, tag=tag, steps=steps, keep_samples=num == self.plan.final_samples,
        )  # fmt: skip
        return {s: {k: m[k] for k in ("fid", "class_accuracy")} for s, m in scored.items()}

    def final(self, run: StudyRun, sweep: Sweep) -> dict:
        """Domain and Inception FID of `final_samples` images from the last checkpoint."""
        plan = self.plan
        domain = self.curve(run, sweep, [plan.steps], plan.guidance, num=plan.final_samples)
        run_dir = RunDir(run.sweep_run.run_dir(sweep.sweep_dir))
        npz = final_samples(plan, run_dir)
        cache = run_dir.curve_results(f"inception_n{plan.final_samples}_g{plan.guidance:g}")
        if cache.is_file():
            inception = json.loads(cache.read_text())
        else:
            extractor, ref = self.inception
            result = compute_metrics(ref, load_npz(npz), extractor, ("fid",), progress=False)
            inception = {"fid": result["fid"]["value"], "extractor": extractor.name}
            atomic_write(cache, json.dumps(inception) + "\n")
        return {"domain": domain[plan.steps], "inception": inception}


@torch.inference_mode()
def region_losses(config: Path, words: list[str], num_images: int, seed: int = 1234) -> dict:
    """Unweighted eps-MSE of the run's final EMA model per tenth of [0, T) on real images: the
    same images, timesteps (evenly spread over [0, T), shuffled) and noise for every run, so the
    numbers compare methods directly."""
    cfg = load_config(config, "inference", [*words, "data.random_flip=false"])
    autoencoder = build_autoencoder(cfg)
    model, _, _ = build_sampling_model(cfg, autoencoder, torch.device("cpu"))
    diffusion = build_diffusion(cfg)
    images, labels = export_reference(build_dataset(cfg), num_images, seed=seed)
    x = torch.from_numpy(images[..., :1]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    y = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_images) * diffusion.num_timesteps // num_images
    t = t[torch.randperm(num_images, generator=generator)]
    noise = torch.randn(x.shape, generator=generator)
    mse = torch.cat(
        [
            diffusion.training_losses(
                model, x[i : i + 128], t[i : i + 128], {"y": y[i : i + 128]}, noise[i : i + 128]
            )["mse"]
            for i in range(0, num_images, 128)
        ]
    )
    return loss_by_region(t, mse, diffusion.num_timesteps)


def do_run(run: StudyRun, sweep: Sweep, scorer: Scorer, noise_probe: bool) -> dict:
    """Train (resuming) and score one run; returns its record."""
    plan = scorer.plan
    (cfg,) = load_run_configs(dataclasses.replace(sweep, runs=(run.sweep_run,)), ("resume=true",))
    start = time.perf_counter()
    if phase_state("train", cfg) != DONE:
        set_status(sweep.sweep_dir, run.name, "train", "running")
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


def machine() -> str:
    return f"{device_name('cpu')}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def load_records(folder: Path) -> dict[str, dict]:
    """Run name -> finished record, of every record in `folder`."""
    records = (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))
    return {record["name"]: record for record in records}


def write_record(folder: Path, record: dict) -> Path:
    return atomic_write(folder / f"{record['name']}.json", json.dumps(record, indent=2) + "\n")


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
    import speedup_report

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
