"""Which timesteps make a study model's images what they are? Sample with one model's denoiser
above a switch timestep and another's below it, and score the result.

    python benchmarks/speedup_handoff.py --runs RUNS                  # released variant / baseline
    python benchmarks/speedup_handoff.py --runs RUNS --pair speed_paper baseline --step 2000 \
        --switch 700                                                  # SpeeD's lag mid-training

Two of the study's models (each at the learning rate chosen for it, training seed `--seed`,
default 0, EMA weights of the checkpoint at `--step`, default the last) take turns: for every
`--switch` s, one hand-off samples with the first model for t >= s and the second for t < s, the
other the reverse; each model alone is the reference. Everything else is the study's scoring:
the same `--num` images (default: 1000 at the last step, 256 before) with the same starting
noise, classes, sampler noise and sampler (DDIM-25, eta 1, guidance 2), scored with the domain
classifier (FID, class accuracy) and, at the last step, Inception FID, against the study's real
images, so each row sits beside the study's own scores.

The questions it answers: the released variant (tanh sampling + P2 weights) scores best on the
domain classifier and worst on Inception features, and its held-out loss is worse than the
baseline's for small t and better for large t: which part of the trajectory makes which score?
The paper's SpeeD lags the baseline mid-training while its loss is worse at large t, the
timesteps it draws less often: does that deficit make the lag?

Samples are kept under `RUNS/handoff/` with their scores (a rerun resumes from them). Writes
benchmarks/results/speedup_<backbone>_handoff_<first>_<second>_seed<seed>_step<step>.{json,md,
png}; the figure shows, for the lowest switch, each model's own samples, the same images with the
other model's steps below the switch, and their difference.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from speedup_plan import NAMED, PLANS, RESULTS, machine, study_runs
from speedup_regions import study_seed0_runs
from speedup_scoring import Scorer, final_samples
from torch import nn

from evaluations.cli import run
from evaluations.evaluate import compute_metrics
from evaluations.image_io import load_npz
from speed.config import load_config
from speed.generation import sampler_from_config
from speed.run import RunDir
from speed.runners.build import build_autoencoder, build_diffusion, build_sampling_model
from speed.runners.inference import draw_batch, sample_labels
from speed.utils.atomic import atomic_path, atomic_write
from speed.utils.images import make_grid, to_uint8

PAIR = ("speed_released", "baseline")  # the default two models that take turns


class TimestepHandoff(nn.Module):
    """A denoiser that is `high` at timesteps >= `switch` and `low` below (original timesteps, as
    every sampler passes them); a batch that straddles the switch gets each row from its side."""

    def __init__(self, high: nn.Module, low: nn.Module, switch: int):
        super().__init__()
        self.high, self.low, self.switch = high, low, switch
        self.num_classes = high.num_classes

    def _route(self, call, t: torch.Tensor) -> torch.Tensor:
        above = t >= self.switch
        if bool(above.all()):
            return call(self.high)
        if not bool(above.any()):
            return call(self.low)
        rows = above.view(-1, *([1] * 3))
        return torch.where(rows, call(self.high), call(self.low))

    def forward(self, x, t, y=None):
        return self._route(lambda m: m(x, t, y), t)

    def forward_with_cfg(self, x, t, y, cfg_scale):
        return self._route(lambda m: m.forward_with_cfg(x, t, y, cfg_scale), t)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=sorted(PLANS), default="unet")
    parser.add_argument("--runs", type=Path, required=True, help="the study's --runs folder")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--pair", nargs=2, choices=sorted(NAMED), default=list(PAIR), help="the two methods"
    )
    parser.add_argument("--step", type=int, default=None, help="checkpoint (default: the last)")
    parser.add_argument("--seed", type=int, default=0, help="the runs' training seed (default 0)")
    parser.add_argument("--switch", type=int, nargs="+", default=[100, 700])
    parser.add_argument(
        "--num", type=int, default=None, help="images (default: the study's, at that step)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    if any(not 0 < s < 1000 for s in args.switch):
        parser.error("--switch takes timesteps between 1 and 999")
    if args.pair[0] == args.pair[1]:
        parser.error("--pair takes two different methods")
    return args


def study_model(study_run, sweep, step: int, plan, scorer: Scorer) -> tuple:
    """(inference config, EMA model, data spec) of a study run's checkpoint at `step`, with the
    study's sampling settings (on the CPU)."""
    run_dir = RunDir(study_run.sweep_run.run_dir(sweep.sweep_dir))
    words = study_run.sweep_run.words(
        sweep.sweep_dir,
        [f"ckpt_path={run_dir.checkpoint(step)}", *scorer.sampling_words(plan.guidance)],
    )
    cfg = load_config(study_run.sweep_run.config, "inference", words)
    device = torch.device("cpu")
    model, _, spec = build_sampling_model(cfg, build_autoencoder(cfg).to(device), device)
    return cfg, model, spec


def handoff_images(cfg, spec, high: nn.Module, low: nn.Module, switch: int, num: int) -> tuple:
    """uint8 RGB images [num, H, W, 3] and their labels: the first `num` images of the inference
    phase of `cfg`, drawn with the denoiser handed from `high` to `low` at timestep `switch`."""
    device = next(high.parameters()).device
    model = TimestepHandoff(high, low, switch)
    diffusion, autoencoder = build_diffusion(cfg), build_autoencoder(cfg).to(device)
    labels = sample_labels(cfg, spec.num_classes, num)
    sampler, batch = sampler_from_config(cfg), cfg.per_proc_batch_size
    chunks = []
    for b in range(math.ceil(num / batch)):
        indices = range(b * batch, min(num, (b + 1) * batch))
        images = draw_batch(
            cfg, model, diffusion, autoencoder, spec, indices, b, sampler=sampler,
            scale=float(cfg.guidance_scale), labels=labels, device=device,
        )  # fmt: skip
        chunks.append(to_uint8(images))
        print(f"  switch {switch}: {indices.stop}/{num} images", end="\r", flush=True)
    images = np.concatenate(chunks)
    if images.shape[-1] == 1:  # as the phase's PNGs read back
        images = images.repeat(3, axis=-1)
    return images, labels


def scores(npz: Path, scorer: Scorer, inception: bool = True) -> dict:
    """Domain FID and class accuracy, and Inception FID (None without `inception`), of the images
    in `npz` (kept beside it in a .json, so a rerun does not extract the features again)."""
    cache = npz.parent / f"{npz.stem}.scores.json"
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["inception_fid"] is not None or not inception:
            return stored
    samples = load_npz(npz)
    domain = compute_metrics(
        scorer.domain_ref, samples, scorer.domain, ("fid", "class_accuracy"), progress=False
    )
    inception_fid = None
    if inception:
        extractor, ref = scorer.inception
        inception_fid = compute_metrics(ref, samples, extractor, ("fid",), progress=False)["fid"]
    result = {
        "domain_fid": domain["fid"]["value"],
        "class_accuracy": domain["class_accuracy"]["value"],
        "inception_fid": None if inception_fid is None else inception_fid["value"],
    }
    atomic_write(cache, json.dumps(result) + "\n")
    return result


def plot(panels: list[tuple[str, np.ndarray]], title: str, path: Path, columns: int = 12) -> None:
    """One row per (label, uint8 images [N, H, W, 3]) panel: its first `columns` images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(columns * 0.9, 1.25 * len(panels)))
    for ax, (label, images) in zip(axes, panels):
        ax.imshow(make_grid(images[:columns], nrow=columns), interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def difference_panel(images: np.ndarray, other: np.ndarray, gain: int = 4) -> np.ndarray:
    """uint8 images of `gain` * (images - other) around mid grey (128 = no difference)."""
    diff = images.astype(np.int32) - other.astype(np.int32)
    return np.clip(128 + gain * diff, 0, 255).astype(np.uint8)


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"# Hand-offs between two of the SpeeD study's models ({meta['backbone']})",
        "",
        f"{meta['num']} images each, the study's sampling (same noise, classes, sampler noise; "
        f"{meta['sampler']}, guidance {meta['guidance']:g}), EMA weights at step {meta['step']} "
        f"of the seed-{meta['seed']} runs: "
        f"{', '.join(f'{m} lr {lr:g}' for m, lr in meta['lrs'].items())}. "
        f"{meta['machine']}, {meta['date']}. `{meta['command']}`",
        "",
        "| t >= switch | t < switch | switch | domain FID | class acc | Inception FID |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['high']} | {row['low']} | {row['switch'] if row['switch'] else '-'} | "
            f"{row['domain_fid']:.1f} | {row['class_accuracy']:.3f} | "
            f"{'-' if row['inception_fid'] is None else format(row['inception_fid'], '.1f')} |"
        )
    lines += [
        "",
        "Rows with switch `-`: the model alone. Inception FID is scored at the study's last step.",
    ]
    return "\n".join(lines) + "\n"


def handoff(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    plan, sweep, records, chosen = study_seed0_runs(args.backbone, args.runs, args.results)
    pair, seed = tuple(args.pair), args.seed
    missing = [m for m in pair if m not in chosen]
    if missing:
        raise SystemExit(f"error: no finished seed-0 run of {missing} in {args.results}")
    cells = study_runs(sweep)
    picked = {m: cells[(*NAMED[m], chosen[m][1], seed)] for m in pair}  # at the same rate
    for method, study_run in picked.items():
        if study_run.name not in records:
            raise SystemExit(
                f"error: {method}'s seed-{seed} run has not finished: {study_run.name}"
            )
    step = args.step or plan.steps
    if step not in plan.checkpoint_steps:
        raise SystemExit(f"error: --step {step}: the study checkpoints {plan.checkpoint_steps}")
    final = step == plan.steps
    num = args.num or (plan.final_samples if final else plan.num_samples)
    scorer = Scorer(plan, args.runs.resolve())
    models = {m: study_model(picked[m], sweep, step, plan, scorer) for m in pair}
    run_dirs = {m: RunDir(picked[m].sweep_run.run_dir(sweep.sweep_dir)) for m in pair}
    out_dir = args.runs / "handoff"

    def drawn(high: str, low: str, switch: int) -> Path:
        """The images with `high` above `switch` and `low` below (switch 0: `high` alone)."""
        if switch == 0 and final and num == plan.final_samples:
            return final_samples(plan, run_dirs[high])  # the study's own final samples
        name = f"{high}_alone" if switch == 0 else f"{high}_above_{switch}_{low}_below"
        npz = out_dir / f"{name}_seed{seed}_step{step}_n{num}.npz"
        if not npz.is_file():
            cfg, high_model, spec = models[high]
            images, labels = handoff_images(cfg, spec, high_model, models[low][1], switch, num)
            npz.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(npz) as tmp, open(tmp, "wb") as f:
                np.savez(f, arr_0=images, arr_1=labels)
        return npz

    def alone(method: str) -> dict:
        """The scores of `method` alone; at the study's final scoring, its record's."""
        if final and num == plan.final_samples:
            record = records[picked[method].name]["final"]
            return dict(
                domain_fid=record["domain"]["fid"],
                class_accuracy=record["domain"]["class_accuracy"],
                inception_fid=record["inception"]["fid"],
            )
        return scores(drawn(method, method, 0), scorer, final)

    rows = [dict(high=m, low=m, switch=0, **alone(m)) for m in pair]
    panels = []
    for switch in args.switch:
        for high, low in (pair, pair[::-1]):
            npz = drawn(high, low, switch)
            rows.append(dict(high=high, low=low, switch=switch, **scores(npz, scorer, final)))
            print(f"{high} >= {switch} > {low}: {rows[-1]}", flush=True)
            if switch == min(args.switch):
                alone, handed = load_npz(drawn(high, high, 0)).images, load_npz(npz).images
                panels += [
                    (f"{high} alone", alone),
                    (f"{high} for t >= {switch}, {low} below", handed),
                    ("difference x4 (grey = none)", difference_panel(alone, handed)),
                ]
    cfg = models[pair[0]][0]
    result = {
        "meta": {
            "backbone": args.backbone,
            "step": step,
            "seed": seed,
            "num": num,
            "sampler": " ".join(plan.sampling),
            "guidance": plan.guidance,
            "lrs": {m: chosen[m][1] for m in pair},
            "sampling_seed": int(cfg.seed),
            "machine": machine(),
            "date": datetime.date.today().isoformat(),
            "command": " ".join(["python", "benchmarks/speedup_handoff.py", *sys.argv[1:]]),
        },
        "rows": rows,
    }
    out = (
        args.results / f"speedup_{args.backbone}_handoff_{pair[0]}_{pair[1]}_seed{seed}_step{step}"
    )
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    plot(
        panels,
        f"step {step}: each model's samples, and with its steps below t = {min(args.switch)} "
        "done by the other model (same noise per column)",
        out.with_suffix(".png"),
    )
    print(table, end="")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run(lambda: handoff(args))


if __name__ == "__main__":
    raise SystemExit(main())
