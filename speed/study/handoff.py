"""Which timesteps make a study model's images what they are? Sample with one model's denoiser
above a switch timestep and another's below it, and score the result.

    python -m speed.study.handoff studies/speed_unet.yaml --pair speed_released baseline
    python -m speed.study.handoff studies/speed_unet.yaml --pair speed_paper baseline \
        --step 2000 --switch 700                          # SpeeD's lag mid-training

Two of the study's models (each at the setting chosen for it, training seed `--seed`, default the
first, EMA weights of the checkpoint at `--step`, default the last) take turns: for every
`--switch` s, one hand-off samples with the first model for t >= s and the second for t < s, the
other the reverse; each model alone is the reference. Everything else is the study's scoring: the
same `--num` images (default: the final number at the last step, the first curve's before) with
the same starting noise, classes, sampler noise and sampler, scored with the study's final
features (only the first of them before the last step), so each row sits beside the study's own
scores. Samples are kept under `<runs>/handoff/` with their scores (a rerun resumes from them).
Writes `<report>_handoff_<first>_<second>_seed<seed>_step<step>.{json,md,png}`; the figure shows,
for the lowest switch, each model's own samples, the same images with the other model's steps
below the switch, and their difference.
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
from torch import nn

from evaluations.evaluate import compute_metrics
from evaluations.image_io import load_npz
from speed.config import load_config
from speed.errors import ConfigError, run_cli
from speed.generation import sampler_from_config
from speed.run import RunDir
from speed.runners.build import build_autoencoder, build_diffusion, build_sampling_model
from speed.runners.inference import draw_batch, sample_labels
from speed.study.plan import machine, open_study, probed_or_refuse, setting_text
from speed.study.scoring import Scorer, final_samples
from speed.utils.atomic import atomic_path, atomic_write
from speed.utils.images import make_grid, to_uint8


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
    parser.add_argument("study", type=Path, help="the study file")
    parser.add_argument("--runs", type=Path, default=None, help="its runs folder, if moved")
    parser.add_argument("--pair", nargs=2, required=True, help="the two methods")
    parser.add_argument("--step", type=int, default=None, help="checkpoint (default: the last)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: first)")
    parser.add_argument("--switch", type=int, nargs="+", default=[100, 700])
    parser.add_argument("--num", type=int, default=None, help="images (default: the study's)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    if any(not 0 < s < 1000 for s in args.switch):
        parser.error("--switch takes timesteps between 1 and 999")
    if args.pair[0] == args.pair[1]:
        parser.error("--pair takes two different methods")
    return args


def study_model(study_run, sweep, step: int, scorer: Scorer) -> tuple:
    """(inference config, EMA model, data spec) of a study run's checkpoint at `step`, with the
    study's sampling settings (on the CPU)."""
    run_dir = RunDir(study_run.run_dir(sweep))
    guidance = scorer.study.score.guidance
    words = study_run.words(
        sweep,
        [
            f"ckpt_path={run_dir.checkpoint(step)}",
            *scorer.sampling_words(guidance, None, study_run.method),
        ],
    )
    cfg = load_config(study_run.sweep_run.config, "inference", words)
    device = torch.device("cpu")
    model, _, spec = build_sampling_model(cfg, build_autoencoder(cfg).to(device), device)
    return cfg, model, spec


def scores(npz: Path, scorer: Scorer, kinds: list[str]) -> dict:
    """features -> {metric: value} of the images in `npz` under `kinds` (the study's final
    metrics), kept beside it in a .json so a rerun does not extract the features again."""
    cache = npz.parent / f"{npz.stem}.scores.json"
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    for kind in kinds:
        if kind not in stored:
            result = compute_metrics(
                scorer.reference(kind), load_npz(npz), scorer.extractor(kind),
                scorer.study.score.final[kind], progress=False,
                **scorer.study.score.metric_settings,
            )  # fmt: skip
            stored[kind] = {k: v["value"] for k, v in result.items()
                            if isinstance(v, dict) and "value" in v}  # fmt: skip
    atomic_write(cache, json.dumps(stored) + "\n")
    return {kind: stored[kind] for kind in kinds}


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
    columns = [(k, m) for k, metrics in meta["scores"].items() for m in metrics]
    lines = [
        f"# Hand-offs between two of the study's models ({meta['study']})",
        "",
        f"{meta['num']} images each, the study's sampling (same noise, classes, sampler noise; "
        f"{meta['sampler']}), EMA weights at step {meta['step']} of the seed-{meta['seed']} runs: "
        f"{', '.join(f'{m} ({s})' for m, s in meta['settings'].items())}. "
        f"{meta['machine']}, {meta['date']}. `{meta['command']}`",
        "",
        "| t >= switch | t < switch | switch | "
        + " | ".join(f"{k} {m}" for k, m in columns)
        + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for row in result["rows"]:
        cells = [row["scores"].get(k, {}).get(m) for k, m in columns]
        lines.append(
            f"| {row['high']} | {row['low']} | {row['switch'] if row['switch'] else '-'} | "
            + " | ".join(
                "-" if v is None else f"{v:.3f}" if m == "class_accuracy" else f"{v:.1f}"
                for v, (_, m) in zip(cells, columns)
            )  # fmt: skip
            + " |"
        )
    lines += [
        "",
        "Rows with switch `-`: the model alone. Features after the first: last step only.",
    ]
    return "\n".join(lines) + "\n"


def handoff(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    study, sweep, runs, records = open_study(args.study, args.runs)
    pair = tuple(args.pair)
    unknown = [m for m in pair if m not in study.methods]
    if unknown:
        raise ConfigError(f"--pair: {unknown} not among the methods {list(study.methods)}")
    chosen = probed_or_refuse(study, runs, records, list(pair))
    missing = [m for m in pair if m not in chosen]
    if missing:
        raise ConfigError(f"no finished first-seed run of {missing} in {study.records_dir}")
    seed = study.seeds[0] if args.seed is None else args.seed
    picked = {m: runs.get((m, chosen[m][1], seed)) for m in pair}
    for method, study_run in picked.items():
        if study_run is None or study_run.name not in records:
            raise ConfigError(f"{method}'s seed-{seed} run has not finished")
    step = args.step or study.steps
    if step not in study.checkpoint_steps:
        raise ConfigError(f"--step {step}: the study checkpoints {study.checkpoint_steps}")
    final = step == study.steps
    score = study.score
    num = args.num or (score.final_samples if final else score.curves[0].samples)
    kinds = list(score.final) if final else list(score.final)[:1]
    scorer = Scorer(study, sweep)
    models = {m: study_model(picked[m], sweep, step, scorer) for m in pair}
    run_dirs = {m: RunDir(picked[m].run_dir(sweep)) for m in pair}
    out_dir = study.runs_dir / "handoff"
    own = final and num == score.final_samples  # the study's own final samples and scores

    def drawn(high: str, low: str, switch: int) -> Path:
        """The images with `high` above `switch` and `low` below (switch 0: `high` alone)."""
        if switch == 0 and own:
            return final_samples(study, run_dirs[high])
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
        if own:
            return records[picked[method].name]["final"]
        return scores(drawn(method, method, 0), scorer, kinds)

    rows = [dict(high=m, low=m, switch=0, scores=alone(m)) for m in pair]
    panels = []
    for switch in args.switch:
        for high, low in (pair, pair[::-1]):
            npz = drawn(high, low, switch)
            rows.append(dict(high=high, low=low, switch=switch, scores=scores(npz, scorer, kinds)))
            print(f"{high} >= {switch} > {low}: {rows[-1]['scores']}", flush=True)
            if switch == min(args.switch):
                images, handed = load_npz(drawn(high, high, 0)).images, load_npz(npz).images
                panels += [
                    (f"{high} alone", images),
                    (f"{high} for t >= {switch}, {low} below", handed),
                    ("difference x4 (grey = none)", difference_panel(images, handed)),
                ]
    result = {
        "meta": {
            "study": study.name,
            "step": step,
            "seed": seed,
            "num": num,
            "sampler": " ".join(f"{k}={v}" for k, v in score.sampler.items()),
            "settings": {m: setting_text(chosen[m][1]) for m in pair},
            "scores": {k: list(score.final[k]) for k in kinds},
            "machine": machine(),
            "date": datetime.date.today().isoformat(),
            "command": " ".join(["python -m speed.study.handoff", *sys.argv[1:]]),
        },
        "rows": rows,
    }
    out = Path(f"{study.report}_handoff_{pair[0]}_{pair[1]}_seed{seed}_step{step}")
    out.parent.mkdir(parents=True, exist_ok=True)
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
    return run_cli(lambda: handoff(args))


if __name__ == "__main__":
    raise SystemExit(main())
