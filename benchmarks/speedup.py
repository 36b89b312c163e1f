"""SpeeD's training speed-up, measured: FID against training step, baseline vs `faster: true`.

    python benchmarks/speedup.py              # 3 seeds x {baseline, SpeeD} + ablations + Inception
    python benchmarks/speedup.py --quick      # seed 0 only (the full run re-uses it)

Both methods train the demo experiment (configs/image/animals/{base,faster}.yaml: same model,
data, batch, optimizer and steps; only the timestep sampling and loss weights differ) from the
same seeds, with a DiT (the backbone of the SpeeD paper) in place of the demo's UNet: the DiT
variant's shape narrowed to 1.3M parameters, AdamW at 1e-3 and 1200 steps so the whole
benchmark fits in 2 hours on a 2-core CPU (`Plan.model`, `Plan.training`; pass
`model.hidden_size=192 model.depth=6 model.num_heads=3` for the size of
configs/image/animals/dit.yaml, `--steps` for a longer budget). Every checkpoint is sampled
with the same per-image seeds (deterministic DDIM, no guidance, as in the paper's FID) and scored
with the demo's fast domain-classifier FID; the last one also with Inception FID. The speed-up of a
seed is steps the baseline needs to reach its own final FID divided by steps SpeeD needs to
reach that FID (`evaluations.curve.speedup`). The ablations (configs/image/animals/ablations/)
are trained once (seed 0, the same budget) and scored at its end.

To explain a speed-up or its absence, the final EMA models of each method are also scored on a
fixed held-out batch: the unweighted eps-MSE per tenth of the timestep range. SpeeD moves
training from the convergence area (t >= tau) to t < tau, which should show up there.

Everything resumes: trained checkpoints and scored steps are kept under --runs and re-used, so
the full run after `--quick` trains only the other seeds and the ablations.
Writes benchmarks/results/speedup{,_quick}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from evaluations import domain_classifier
from evaluations.curve import evaluate_run, fid_curve, reference_stats, speedup, steps_to_reach
from evaluations.evaluate import build_extractor
from evaluations.export_reference import export_reference
from speed.config import load_config
from speed.diffusion.timesteps import loss_by_region
from speed.runners.build import (
    build_autoencoder,
    build_dataset,
    build_diffusion,
    build_sampling_model,
)
from speed.runners.train import train
from speed.utils.checkpoint import latest_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs" / "image" / "animals"
METHODS = {"baseline": CONFIGS / "base.yaml", "speed": CONFIGS / "faster.yaml"}
ABLATIONS = ("no_dual", "no_weight", "k1", "k10", "lam08", "lam10")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to train and how to score it."""

    seeds: tuple[int, ...] = (0, 1, 2)
    # The demo's DiT variant narrowed to 1.3M parameters (hidden 128, depth 4, 2 heads; about 3x
    # fewer FLOPs per step), so that 3 seeds x 2 methods + ablations fit in 2 hours on 2 CPU cores.
    model: tuple[str, ...] = (
        "model._target_=speed.models.dit.build_dit",
        "model.name=DiT-S/4",
        "model.hidden_size=128",
        "model.depth=4",
        "model.num_heads=2",
    )
    # The learning rate the recorded results were measured with (the demo has since moved to 2e-3).
    training: tuple[str, ...] = ("optimizer.lr=1.0e-3",)
    steps: int = 1200  # optimizer steps of each baseline / SpeeD run (the baseline plateaus)
    eval_every: int = 200  # checkpoint (and domain-FID) interval
    num_samples: int = 256  # generated images per scored checkpoint
    num_reference: int = 1000  # real images for the reference statistics
    sampler: str = "ddim"
    num_steps: int = 25  # sampling steps
    eta: float = 0.0  # deterministic DDIM, as the recorded results (the demo grids use eta 1)
    inception_steps: tuple[int, ...] = (1200,)  # checkpoints also scored with Inception FID
    inception_samples: int = 256
    ablations: tuple[str, ...] = ABLATIONS
    ablation_steps: int = 1200  # each ablation's budget (one seed: the first)
    region_images: int = 500  # held-out images for the loss-per-region probe

    @classmethod
    def quick(cls) -> Plan:
        """The full plan's first seed, without ablations or Inception."""
        return cls(seeds=(0,), inception_steps=(), ablations=())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0 only, ~12 min")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per baseline/SpeeD run")
    parser.add_argument("--eval-every", type=int, default=None, help="checkpoint interval")
    parser.add_argument("--num-samples", type=int, default=None, help="images per checkpoint")
    parser.add_argument("--ablations", nargs="*", default=None, help=f"of {', '.join(ABLATIONS)}")
    parser.add_argument("--ablation-steps", type=int, default=None)
    parser.add_argument("--no-inception", action="store_true", help="skip the Inception FIDs")
    parser.add_argument("--domain", default=None, help="domain classifier (default: created)")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: runs/...)")
    parser.add_argument("--out", type=Path, default=None, help="results stem (no suffix)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan()
    chosen = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "num_samples": args.num_samples,
        "ablations": tuple(args.ablations) if args.ablations is not None else None,
        "ablation_steps": args.ablation_steps,
        "inception_steps": () if args.no_inception else None,
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in chosen.items() if v is not None})
    unknown = sorted(set(plan.ablations) - set(ABLATIONS))
    if unknown:
        raise SystemExit(f"error: unknown ablation(s) {unknown}; choose from {list(ABLATIONS)}")
    for name, steps in (("steps", plan.steps), ("ablation_steps", plan.ablation_steps)):
        if steps % plan.eval_every:
            raise SystemExit(f"error: {name}={steps} must be a multiple of --eval-every")
    return plan


# ---- one run: train (or resume), then score its checkpoints ----


@dataclasses.dataclass
class Run:
    name: str  # e.g. "speed/seed1", "ablation/k10"
    config: Path
    overrides: list[str]
    checkpoint_steps: list[int]  # the scored checkpoints (not a preemption checkpoint between)


def make_run(name: str, config: Path, runs_dir: Path, seed: int, steps: int, every: int, extra):
    overrides = [
        f"experiment_dir={runs_dir / name}",
        f"seed={seed}",
        f"max_training_steps={steps}",
        f"ckpt_every={every}",
        "sample_every=0",
        "log_every=100",
        "wandb=disabled",
        *extra,
    ]
    return Run(name, config, overrides, list(range(every, steps + 1, every)))


def train_run(run: Run) -> float:
    """Train (resuming any earlier, unfinished attempt); returns the seconds spent training."""
    cfg = load_config(run.config, "train", [*run.overrides, "resume=true"])
    last = latest_checkpoint(Path(cfg.experiment_dir) / "train" / "checkpoints")
    if last is not None and int(last.stem) >= cfg.max_training_steps:
        return 0.0
    print(f"== training {run.name} ({cfg.max_training_steps} steps)", flush=True)
    start = time.perf_counter()
    train(cfg)
    return time.perf_counter() - start


def score_run(run: Run, plan: Plan, ref, extractor, steps=None, num=None, tag=None) -> dict:
    """step -> {"fid", "class_accuracy", ...} for the checkpoints of `steps` (default: the run's
    checkpoint_steps), cached in the run's folder."""
    steps = run.checkpoint_steps if steps is None else list(steps)
    sampling = [
        f"sampler={plan.sampler}",
        f"num_steps={plan.num_steps}",
        f"eta={plan.eta}",
        "guidance_scale=1.0",
        "per_proc_batch_size=128",
    ]
    scored = evaluate_run(
        run.config,
        ref,
        extractor,
        num or plan.num_samples,
        [*run.overrides, *sampling],
        progress=False,
        tag=tag,
        steps=steps,
    )
    return {step: metrics for step, metrics in scored.items() if step in steps}


@torch.inference_mode()
def region_losses(run: Run, num_images: int, seed: int = 1234) -> dict[str, float]:
    """Unweighted eps-MSE of the run's final EMA model per tenth of [0, T) on real images: the
    same images, timesteps (evenly spread over [0, T), shuffled) and noise for every run, so the
    numbers compare methods directly."""
    cfg = load_config(run.config, "inference", [*run.overrides, "data.random_flip=false"])
    autoencoder = build_autoencoder(cfg)
    model, _, _ = build_sampling_model(cfg, autoencoder, torch.device("cpu"))
    diffusion = build_diffusion(cfg)
    dataset = build_dataset(cfg)
    images, labels = export_reference(dataset, num_images, seed=seed)
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


# ---- the benchmark ----


def reference(runs_dir: Path, num: int, extractor):
    """Statistics of `num` real demo images (written once as an .npz, cached per extractor)."""
    path = runs_dir / f"reference_{num}.npz"
    if not path.is_file():
        cfg = load_config(METHODS["baseline"], "inference", ["data.random_flip=false"])
        images, labels = export_reference(build_dataset(cfg), num)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, arr_0=images, arr_1=labels)
    return reference_stats(path, extractor, runs_dir / "reference_stats", progress=False)


def summarize_speedups(curves: dict[str, dict[int, dict]], seeds) -> dict:
    """Per seed and over seeds: the baseline's final FID, the steps each method needs to reach
    it, and the speed-up; also the speed-up of the seed-averaged curves."""
    per_seed = {}
    for seed in seeds:
        base = fid_curve(curves[f"baseline/seed{seed}"])
        fast = fid_curve(curves[f"speed/seed{seed}"])
        target = base[max(base)]
        per_seed[seed] = {
            "baseline_final_fid": target,
            "speed_final_fid": fast[max(fast)],
            "baseline_steps": steps_to_reach(base, target),
            "speed_steps": steps_to_reach(fast, target),
            "speedup": speedup(base, fast),
        }
    mean_curve = {
        method: {
            step: statistics.fmean(fid_curve(curves[f"{method}/seed{s}"])[step] for s in seeds)
            for step in curves[f"{method}/seed{seeds[0]}"]
        }
        for method in METHODS
    }
    factors = [r["speedup"] for r in per_seed.values()]
    reached = [f for f in factors if f is not None]
    return {
        "per_seed": per_seed,
        "speedup_mean": statistics.fmean(reached) if reached else None,
        "speedup_std": statistics.stdev(reached) if len(reached) > 1 else None,
        "seeds_reaching_target": f"{len(reached)}/{len(factors)}",
        "mean_curve": mean_curve,
        "speedup_of_mean_curves": speedup(mean_curve["baseline"], mean_curve["speed"]),
    }


def plot(result: dict, path: Path) -> None:
    """Left: domain FID vs step (each seed thin, the seed mean thick); right: loss per region."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    colors = {"baseline": "tab:blue", "speed": "tab:orange"}
    for name, curve in result["curves"].items():
        method = name.split("/")[0]
        if method in colors:
            steps = sorted(int(s) for s in curve)
            fids = [curve[str(s)]["fid"] for s in steps]
            left.plot(steps, fids, color=colors[method], alpha=0.35, linewidth=1)
    for method, curve in result["speedup"]["mean_curve"].items():
        steps = sorted(int(s) for s in curve)
        seeds = len(result["plan"]["seeds"])
        label = f"{method} (mean of {seeds} seeds)" if seeds > 1 else f"{method} (seed 0)"
        left.plot(
            steps,
            [curve[str(s)] for s in steps],
            color=colors[method],
            linewidth=2.5,
            marker="o",
            markersize=3,
            label=label,
        )
    for name, row in result["ablations"].items():
        left.scatter([row["step"]], [row["fid"]], marker="x", color="gray")
        left.annotate(name, (row["step"], row["fid"]), fontsize=7, color="gray")
    factor = result["speedup"]["speedup_mean"]
    spread = result["speedup"]["speedup_std"]
    title = "speed-up " + ("n/a" if factor is None else f"{factor:.2f}x")
    title += "" if spread is None else f" +- {spread:.2f} (seed std)"
    left.set(xlabel="training step", ylabel="FID (domain features)", title=title)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    regions = result["region_losses"]
    keys = list(next(iter(regions.values())))
    width = 0.8 / len(regions)
    for i, (method, losses) in enumerate(regions.items()):
        xs = np.arange(len(keys)) + i * width
        right.bar(xs, [losses[k] for k in keys], width, label=method, color=colors.get(method))
    right.set_xticks(
        np.arange(len(keys)) + 0.4 - width / 2,
        [k.split("/")[1] for k in keys],
        rotation=45,
        fontsize=7,
    )
    right.set_yscale("log")
    right.set(xlabel="timestep range", ylabel="eps-MSE (held-out, final EMA)")
    right.set_title("loss per region, mean over seeds", fontsize=10)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def markdown(result: dict, command: str) -> str:
    plan, summary = result["plan"], result["speedup"]
    lines = [
        f"`{command}` on {result['machine']}, {result['date']}, {result['wall_minutes']:.0f} min.",
        "",
        f"Demo dataset and config with {' '.join(plan['model'])} ({plan['steps']} steps, "
        f"batch {result['batch_size']}); FID from the domain-classifier "
        f"features of {plan['num_samples']} samples (DDIM-{plan['num_steps']}, no guidance) vs "
        f"{plan['num_reference']} real images.",
        "",
        "| seed | baseline final FID | baseline steps | SpeeD steps to it | speed-up | "
        "SpeeD final FID |",
        "|---|---|---|---|---|---|",
    ]
    for seed, r in summary["per_seed"].items():
        speed_steps = "never" if r["speed_steps"] is None else f"{r['speed_steps']:.0f}"
        factor = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(
            f"| {seed} | {r['baseline_final_fid']:.2f} | {r['baseline_steps']:.0f} | "
            f"{speed_steps} | {factor} | {r['speed_final_fid']:.2f} |"
        )
    mean, std = summary["speedup_mean"], summary["speedup_std"]
    if mean is not None:
        spread = "" if std is None else f" +- {std:.2f}"
        lines.append(f"| mean | | | | {mean:.2f}x{spread} | |")
    of_mean = summary["speedup_of_mean_curves"]
    lines += [
        "",
        "Speed-up of the seed-averaged curves: "
        + ("never reached" if of_mean is None else f"{of_mean:.2f}x"),
    ]
    if result["inception"]:
        lines += ["", "| run | step | Inception FID |", "|---|---|---|"]
        for name, curve in result["inception"].items():
            for step, metrics in sorted(curve.items(), key=lambda kv: int(kv[0])):
                lines.append(f"| {name} | {step} | {metrics['fid']:.2f} |")
    if result["ablations"]:
        lines += ["", "| run (seed 0) | step | FID | class accuracy |", "|---|---|---|---|"]
        for name, row in result["ablations"].items():
            lines.append(
                f"| {name} | {row['step']} | {row['fid']:.2f} | {row['class_accuracy']:.3f} |"
            )
    regions = result["region_losses"]
    keys = list(next(iter(regions.values())))
    lines += ["", "| held-out eps-MSE | " + " | ".join(k.split("/")[1] for k in keys) + " |"]
    lines.append("|---" * (len(keys) + 1) + "|")
    for method, losses in regions.items():
        lines.append(f"| {method} | " + " | ".join(f"{losses[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = plan_from_args(args)
    runs_dir = args.runs or ROOT / "runs" / "benchmarks" / "speedup"
    out = args.out or RESULTS / ("speedup_quick" if args.quick else "speedup")
    torch.manual_seed(0)
    start = time.perf_counter()
    overrides = [*plan.model, *plan.training, *args.overrides]
    domain = build_extractor(
        "domain", domain_path=domain_classifier.ensure_domain_classifier(args.domain)
    )
    ref = reference(runs_dir, plan.num_reference, domain)

    main_runs = [
        make_run(
            f"{method}/seed{seed}",
            config,
            runs_dir,
            seed,
            plan.steps,
            plan.eval_every,
            overrides,
        )
        for seed in plan.seeds
        for method, config in METHODS.items()
    ]
    ablation_runs = [
        make_run(
            f"ablation/{name}",
            CONFIGS / "ablations" / f"{name}.yaml",
            runs_dir,
            plan.seeds[0],
            plan.ablation_steps,
            plan.ablation_steps,
            overrides,
        )
        for name in plan.ablations
    ]
    train_seconds, curves, ablations = {}, {}, {}
    for run in main_runs:
        train_seconds[run.name] = train_run(run)
        curves[run.name] = score_run(run, plan, ref, domain)
    for run in ablation_runs:
        train_seconds[run.name] = train_run(run)
        final = score_run(run, plan, ref, domain)[plan.ablation_steps]
        ablations[run.name.split("/")[1]] = {"step": plan.ablation_steps, **final}
    for method in METHODS:  # the two methods at the ablation budget, for the same table
        point = curves[f"{method}/seed{plan.seeds[0]}"].get(plan.ablation_steps)
        if ablations and point:
            ablations[method] = {"step": plan.ablation_steps, **point}

    inception = {}
    if plan.inception_steps:
        inception_extractor = build_extractor("inception")
        inception_ref = reference(runs_dir, plan.inception_samples, inception_extractor)
        for run in main_runs:
            scored = score_run(
                run,
                plan,
                inception_ref,
                inception_extractor,
                plan.inception_steps,
                plan.inception_samples,
                "inception",
            )
            inception[run.name] = scored

    per_method_regions = {
        method: [
            region_losses(r, plan.region_images) for r in main_runs if r.name.startswith(method)
        ]
        for method in METHODS
    }
    regions = {
        method: {k: statistics.fmean(d[k] for d in dicts) for k in dicts[0]}
        for method, dicts in per_method_regions.items()
    }
    result = {
        "benchmark": "speedup",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "wall_minutes": (time.perf_counter() - start) / 60,
        "train_seconds": train_seconds,
        "plan": dataclasses.asdict(plan),
        "batch_size": load_config(METHODS["baseline"], "train", overrides).data.batch_size,
        "extractor": domain.name,
        "curves": {name: {str(s): m for s, m in c.items()} for name, c in curves.items()},
        "speedup": _str_keys(summarize_speedups(curves, plan.seeds)),
        "ablations": ablations,
        "inception": {n: {str(s): m for s, m in c.items()} for n, c in inception.items()},
        "region_losses": regions,
    }
    command = "python benchmarks/speedup.py" + (" --quick" if args.quick else "")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    table = markdown(result, command)
    out.with_suffix(".md").write_text(table)
    plot(result, out.with_suffix(".png"))
    print(table)
    print(f"wrote {out}.json, .md and .png")
    return 0


def _str_keys(value):
    """JSON needs string keys: convert nested dict keys (steps, seeds) to str."""
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    return value


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    raise SystemExit(main())
