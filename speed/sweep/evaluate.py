"""FID of every run of a sweep: python -m speed.sweep.evaluate EXPERIMENT_DIR --ref REF [options].

For each run listed in `<experiment_dir>/sweep/sweep.yaml`, the newest inference `.npz` (run
`main.py -p inference -m` with the same sweep first) is scored against REF: FID, plus class
accuracy with `--features domain`. The metrics go beside the samples as
`<run>/inference/<ckpt>.metrics.json`, which `speed.sweep.summary` reads; a run already scored
with the same features and reference is skipped (unless `--force`). REF's statistics are
computed once and cached in the sweep folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluations.cli import extractor_from_args
from evaluations.evaluate import FEATURE_KINDS, compute_metrics
from evaluations.features import FeatureExtractor
from evaluations.image_io import load_npz
from evaluations.reference import FeatureStats
from evaluations.reference_cache import reference_stats
from speed.errors import run_cli
from speed.run import RunDir
from speed.sweep.state import find_sweep_dir, read_record
from speed.utils.atomic import atomic_write

METRICS_SUFFIX = ".metrics.json"


def newest_samples(run_dir: Path) -> Path | None:
    """The run's most recently written inference `.npz`, if any."""
    npzs = list(RunDir(run_dir).inference.glob("*.npz"))
    return max(npzs, key=lambda p: p.stat().st_mtime) if npzs else None


def metrics_path(npz_path: Path) -> Path:
    return npz_path.with_name(npz_path.stem + METRICS_SUFFIX)


def evaluate_sweep(
    sweep_dir: Path,
    ref: FeatureStats,
    ref_path: str,
    extractor: FeatureExtractor,
    batch_size: int = 50,  # images per feature-extraction batch
    device=None,  # feature extraction device (default: CUDA if available)
    progress: bool = True,
    force: bool = False,
) -> dict[str, dict | None]:
    """Score each run's newest samples; returns run name -> stored metrics (None: no samples)."""
    which = ("fid", "class_accuracy") if extractor.classifies_dataset_labels else ("fid",)
    results = {}
    for entry in read_record(sweep_dir).get("runs", []):
        npz_path = newest_samples(Path(entry["dir"]))
        if npz_path is None:
            print(f"{entry['name']}: no inference samples, skipped")
            results[entry["name"]] = None
            continue
        out = metrics_path(npz_path)
        stored = json.loads(out.read_text()) if out.is_file() else None
        if stored and not force and _still_valid(stored, out, npz_path, extractor, ref_path):
            results[entry["name"]] = stored
            continue
        metrics = compute_metrics(
            ref, load_npz(npz_path), extractor, which, batch_size, device, progress
        )
        metrics["reference_path"] = ref_path
        atomic_write(out, json.dumps(metrics, indent=2) + "\n")
        results[entry["name"]] = metrics
        print(f"{entry['name']}: FID {metrics['fid']['value']:.4f} ({npz_path})", flush=True)
    return results


def _still_valid(stored: dict, path: Path, npz_path: Path, extractor, ref_path: str) -> bool:
    """Stored metrics of the same features and reference, written after the samples."""
    return (
        stored.get("extractor") == extractor.name
        and stored.get("reference_path") == ref_path
        and path.stat().st_mtime >= npz_path.stat().st_mtime
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment_dir", help="the sweep's experiment_dir (or its sweep/ folder)")
    parser.add_argument("--ref", required=True, help="reference .npz, folder or statistics .npz")
    parser.add_argument("--features", choices=FEATURE_KINDS, default="inception")
    parser.add_argument("--inception", default=None, help="Inception weights (default_1.pt)")
    parser.add_argument("--domain", default=None, help="domain classifier weights file")
    parser.add_argument("--batch-size", type=int, default=50, help="feature-extraction batch")
    parser.add_argument("--device", default=None, help="feature extraction: cpu, cuda, ...")
    parser.add_argument("--force", action="store_true", help="score runs already scored again")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def evaluate() -> int:
        sweep_dir = find_sweep_dir(args.experiment_dir)
        extractor = extractor_from_args(args)
        ref = reference_stats(
            args.ref, extractor, sweep_dir, args.batch_size, args.device, not args.quiet
        )
        evaluate_sweep(
            sweep_dir,
            ref,
            str(Path(args.ref).resolve()),
            extractor,
            args.batch_size,
            args.device,
            not args.quiet,
            args.force,
        )
        return 0

    return run_cli(evaluate)


if __name__ == "__main__":
    sys.exit(main())
