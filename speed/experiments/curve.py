"""FID against training step for one or more runs: the SpeeD paper's main figure for any experiment.

    python -m speed.experiments.curve -c CONFIG [-c CONFIG2 ...] --ref REF
        [--features inception|domain] [--num-samples N] [--every K] [--out DIR] [key=value ...]

Each config names a run (its `experiment_dir`). Every checkpoint in `train/checkpoints` is sampled
with the inference phase (the same seeds for every checkpoint, so the curve shows the model, not
the noise) and its FID against REF is stored in `<experiment_dir>/curve/<tag>.json` (step ->
metrics, plus the settings they were made with); a re-run evaluates only checkpoints not yet in
it. The samples go to `<experiment_dir>/curve/<tag>/inference/` and are deleted once scored
unless `--keep-samples`. Writes `<out>/fid_curve.csv` and `<out>/fid_curve.png`, prints a table
and each run's speed-up over the first run (`speedup`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from evaluations.cli import extractor_from_args
from evaluations.evaluate import FEATURE_KINDS, METRICS, compute_metrics
from evaluations.features import FeatureExtractor
from evaluations.image_io import load_npz
from evaluations.reference import FeatureStats
from evaluations.reference_cache import reference_stats
from speed.config import load_config
from speed.errors import run_cli
from speed.run import RunDir, checkpoint_step, list_checkpoints
from speed.run.outputs import sampling_settings
from speed.runners.inference import inference
from speed.utils.atomic import atomic_write
from speed.utils.distributed import all_gather_objects, init_distributed, leave_process_group

# ---- choosing checkpoints and reference statistics ----


def select_checkpoints(checkpoints: Sequence[Path], every: int = 1) -> list[Path]:
    """Every `every`-th checkpoint (oldest first, counting from the first) plus the newest."""
    if every < 1:
        raise ValueError(f"every must be >= 1 (evaluate every K-th checkpoint), got {every}")
    chosen = list(checkpoints[::every])
    if checkpoints and checkpoints[-1] not in chosen:
        chosen.append(checkpoints[-1])
    return chosen


def default_tag(extractor: FeatureExtractor, num_samples: int) -> str:
    """Results name: the extractor's class name without 'Features', lowercased, and N
    (`DomainFeatures`, 1000 -> 'domain_n1000')."""
    kind = type(extractor).__name__.removesuffix("Features").lower()
    return f"{kind}_n{num_samples}"


# ---- evaluating a run ----


def _sampling_settings(cfg, extractor: FeatureExtractor, ref: FeatureStats, which) -> dict:
    """What a stored result depends on besides the checkpoint (JSON-ready); the metrics only
    when they are not the default ones (results stored before the choice existed stay valid)."""
    mu = np.ascontiguousarray(ref.mu, dtype=np.float64)
    settings = {
        "extractor": extractor.name,
        "num_samples": int(cfg.num_samples),
        "reference": {
            "num_images": ref.num_images,
            "mu_sha256": hashlib.sha256(mu.tobytes()).hexdigest()[:16],
        },
        "sampling": sampling_settings(cfg),
    }
    if set(which) != set(_default_metrics(extractor)):
        settings["metrics"] = sorted(which)
    return settings


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _load_results(path: Path, settings: dict) -> dict[int, dict]:
    """Stored step -> metrics of `path`; an error if they were made with other settings."""
    if not path.is_file():
        _write_json(path, {"settings": settings, "steps": {}})
        return {}
    stored = json.loads(path.read_text())
    old = stored.get("settings", {})
    for key in sorted(set(old) | set(settings)):
        if old.get(key) != settings.get(key):
            raise ValueError(
                f"{path} holds results made with another {key} ({old.get(key)!r}, now "
                f"{settings.get(key)!r}); pass another --tag, or delete the file to start over"
            )
    return {int(step): metrics for step, metrics in stored["steps"].items()}


def _default_metrics(extractor: FeatureExtractor) -> tuple[str, ...]:
    """FID, and class accuracy when the extractor classifies the dataset's labels."""
    return ("fid", "class_accuracy") if extractor.classifies_dataset_labels else ("fid",)


def _score(npz_path: Path, ref: FeatureStats, extractor, which, batch_size, device, progress,
           settings) -> dict:  # fmt: skip
    """metric -> value of the `which` metrics (`evaluations.evaluate.METRICS`; precision_recall
    gives two); a metric the inputs cannot give (class accuracy of unlabelled samples) is left
    out."""
    result = compute_metrics(
        ref, load_npz(npz_path), extractor, which, batch_size, device, progress, **settings
    )
    keys = [key for name in which for key in METRICS[name].labels(name)]
    return {key: result[key]["value"] for key in keys if result[key]["value"] is not None}


def evaluate_run(
    config_path: str | os.PathLike,
    ref_stats: FeatureStats | None,
    extractor: FeatureExtractor,
    num_samples: int | None = None,
    overrides: Iterable[str] = (),
    every: int = 1,
    progress: bool = True,
    *,
    tag: str | None = None,
    batch_size: int = 50,  # images per feature-extraction batch
    device=None,  # feature extraction device (default: CUDA if available)
    keep_samples: bool = False,
    steps: Iterable[int] | None = None,
    metrics: Sequence[str] | None = None,
    metric_settings: dict | None = None,
) -> dict[int, dict]:
    """Score the run's checkpoints; returns step -> {"fid", ["class_accuracy"], "extractor",
    "num_samples", "checkpoint"} for every evaluated step, old and new.

    `num_samples` defaults to the config's. `steps` limits the scoring to the checkpoints of
    those training steps (instead of every `every`-th). `tag` names the results file and
    samples folder (default `default_tag`). `metrics` names the metrics of
    `evaluations.evaluate.METRICS` to score (default FID, and class accuracy where the extractor
    classifies the dataset's labels), `metric_settings` their settings (e.g. kid_subset_size;
    KID and precision/recall need `ref_stats` with features). Under torchrun every rank samples
    and rank 0 scores and writes; `ref_stats` is needed on rank 0 only.
    """
    dist = init_distributed()
    overrides = list(overrides)
    base = load_config(config_path, "inference", overrides)
    num_samples = int(base.num_samples if num_samples is None else num_samples)
    run = RunDir.of(base)
    tag = tag or default_tag(extractor, num_samples)
    results_path = run.curve_results(tag)
    ckpts = list_checkpoints(run.checkpoints)
    if not ckpts:
        raise FileNotFoundError(f"no checkpoints in {run.checkpoints}; train the run first")
    ckpt_overrides = [f"experiment_dir={run.curve_run(tag).root}", f"num_samples={num_samples}"]
    which = tuple(metrics) if metrics else _default_metrics(extractor)

    results, todo, settings = {}, [], None
    if dist.is_main:
        cfg = load_config(config_path, "inference", overrides + ckpt_overrides)
        settings = _sampling_settings(cfg, extractor, ref_stats, which)
        results = _load_results(results_path, settings)
        if steps is None:
            chosen = select_checkpoints(ckpts, every)
        else:
            wanted = set(steps)
            chosen = [p for p in ckpts if checkpoint_step(p) in wanted]
        todo = [p for p in chosen if checkpoint_step(p) not in results]
    for ckpt in all_gather_objects(todo)[0]:
        cfg = load_config(
            config_path, "inference", [*overrides, *ckpt_overrides, f"ckpt_path={ckpt}"]
        )
        npz_path = inference(cfg)
        if not dist.is_main:
            continue
        scores = _score(
            npz_path, ref_stats, extractor, which, batch_size, device, progress,
            metric_settings or {},
        )  # fmt: skip
        results[checkpoint_step(ckpt)] = {
            **scores,
            "extractor": extractor.name,
            "num_samples": num_samples,
            "checkpoint": str(ckpt),
        }
        steps = {str(step): results[step] for step in sorted(results)}
        _write_json(results_path, {"settings": settings, "steps": steps})
        if not keep_samples:
            shutil.rmtree(npz_path.with_suffix(""), ignore_errors=True)
            npz_path.unlink(missing_ok=True)
    return dict(sorted(all_gather_objects(results)[0].items()))


# ---- comparing curves ----


def fid_curve(results: dict[int, dict]) -> dict[int, float]:
    """step -> FID of `evaluate_run`'s results (the input of `speedup`)."""
    return {step: metrics["fid"] for step, metrics in sorted(results.items())}


def steps_to_reach(curve: dict[int, float], target: float) -> float | None:
    """First training step at which the FID curve (step -> FID) gets down to `target`.

    FID is taken as linear in the step between two evaluated steps, so the crossing may fall
    between checkpoints; nothing is known before the first evaluated step, so a curve already at
    or below `target` there reaches it at that step. Non-finite FIDs are skipped. None if the
    curve never reaches `target`.
    """
    previous = None
    for step, fid in sorted((s, f) for s, f in curve.items() if math.isfinite(f)):
        if fid <= target:
            if previous is None:
                return float(step)
            step0, fid0 = previous
            return step0 + (fid0 - target) / (fid0 - fid) * (step - step0)
        previous = (step, fid)
    return None


def speedup(baseline: dict[int, float], other: dict[int, float]) -> float | None:
    """How many times fewer training steps `other` needs to reach the baseline's final FID.

    = steps_to_reach(baseline, F) / steps_to_reach(other, F), F = the FID at the baseline's last
    evaluated step (the "x-times faster" of the SpeeD paper, read off two FID-vs-step curves);
    crossings are interpolated linearly between evaluated steps (`steps_to_reach`). None if
    `other` never gets down to F. Steps must be positive.
    """
    if not baseline:
        raise ValueError("the baseline curve is empty; evaluate at least one checkpoint")
    if min(baseline) < 1 or (other and min(other) < 1):
        raise ValueError("curve steps must be positive training steps (>= 1)")
    target = baseline[max(baseline)]
    if not math.isfinite(target):
        raise ValueError(f"the baseline's final FID is {target}; it needs a finite value")
    needed = steps_to_reach(other, target)
    return None if needed is None else steps_to_reach(baseline, target) / needed


# ---- output ----


def plot_curves(
    results: dict[str, dict[int, dict]], out_dir: str | os.PathLike, title: str, log_y=False
) -> tuple[Path, Path]:
    """Write `fid_curve.csv` (run, step, fid, [class_accuracy], extractor, num_samples) and
    `fid_curve.png` (one line per run: FID against training step) in `out_dir`."""
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with_accuracy = any("class_accuracy" in m for curve in results.values() for m in curve.values())
    columns = ["run", "step", "fid", *(["class_accuracy"] * with_accuracy)]
    columns += ["extractor", "num_samples"]
    csv_path = out_dir / "fid_curve.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for name, curve in results.items():
            for step, metrics in sorted(curve.items()):
                writer.writerow({"run": name, "step": step, **metrics})

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for name, curve in results.items():
        steps = sorted(curve)
        axes.plot(steps, [curve[s]["fid"] for s in steps], marker="o", markersize=3, label=name)
    axes.set_xlabel("training step")
    axes.set_ylabel("FID")
    if log_y:
        axes.set_yscale("log")
    else:
        axes.ticklabel_format(axis="y", useOffset=False)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    png_path = out_dir / "fid_curve.png"
    figure.savefig(png_path, dpi=120)
    return csv_path, png_path


def format_table(results: dict[str, dict[int, dict]]) -> str:
    """The curves as text, then each run's speed-up over the first run."""
    lines = [f"{'run':<24} {'step':>9} {'FID':>10} {'class acc':>9}"]
    for name, curve in results.items():
        for step, m in sorted(curve.items()):
            accuracy = f"{m['class_accuracy']:9.4f}" if "class_accuracy" in m else ""
            lines.append(f"{name:<24} {step:>9} {m['fid']:>10.5g} {accuracy}".rstrip())
    names = list(results)
    for name in names[1:]:
        factor = speedup(fid_curve(results[names[0]]), fid_curve(results[name]))
        verdict = "never reaches it" if factor is None else f"{factor:.2f}x"
        lines.append(f"speed-up of {name} over {names[0]} (to its final FID): {verdict}")
    return "\n".join(lines)


def _run_names(config_paths: Sequence[str], overrides: list[str]) -> list[str]:
    """Each run's label: its experiment_dir's name, or the whole path where names collide."""
    dirs = [Path(load_config(c, "inference", overrides).experiment_dir) for c in config_paths]
    if len(set(dirs)) < len(dirs):
        raise ValueError("two configs share an experiment_dir; give each run its own")
    names = [d.name for d in dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, dirs)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", action="append", required=True, help="a run's YAML")
    parser.add_argument("--ref", required=True, help="reference .npz, folder or statistics .npz")
    parser.add_argument("--features", choices=FEATURE_KINDS, default="inception")
    parser.add_argument("--inception", default=None, help="Inception weights (default_1.pt)")
    parser.add_argument("--domain", default=None, help="domain classifier weights file")
    parser.add_argument("--num-samples", type=int, default=None, help="default: the config's")
    parser.add_argument("--every", type=int, default=1, help="every K-th checkpoint (+ newest)")
    parser.add_argument("--out", type=Path, default=Path("runs/fid_curve"), help="CSV/PNG folder")
    parser.add_argument("--tag", default=None, help="results name (default: e.g. domain_n256)")
    parser.add_argument("--log-y", action="store_true", help="logarithmic FID axis")
    parser.add_argument("--keep-samples", action="store_true", help="keep the sampled images")
    parser.add_argument("--batch-size", type=int, default=50, help="feature-extraction batch")
    parser.add_argument("--device", default=None, help="feature extraction: cpu, cuda, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every config")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def curve() -> int:
        is_main = init_distributed().is_main
        extractor = extractor_from_args(args)
        names = _run_names(args.config, args.overrides)
        ref = None
        if is_main:
            ref = reference_stats(
                args.ref, extractor, args.out, args.batch_size, args.device, not args.quiet
            )
        results = {}
        for name, config in zip(names, args.config):
            results[name] = evaluate_run(
                config,
                ref,
                extractor,
                args.num_samples,
                args.overrides,
                args.every,
                not args.quiet,
                tag=args.tag,
                batch_size=args.batch_size,
                device=args.device,
                keep_samples=args.keep_samples,
            )
        if is_main:
            num = {m["num_samples"] for curve in results.values() for m in curve.values()}
            title = f"FID vs training step, {', '.join(map(str, num))} samples; {extractor.name}"
            title = textwrap.fill(title, 90)
            csv_path, png_path = plot_curves(results, args.out, title, args.log_y)
            print(format_table(results))
            print(f"wrote {csv_path} and {png_path}")
        leave_process_group()
        return 0

    return run_cli(curve)


if __name__ == "__main__":
    sys.exit(main())
