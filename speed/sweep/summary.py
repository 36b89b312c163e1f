"""One table of a sweep's final metrics: python -m speed.sweep.summary EXPERIMENT_DIR.

One row per run of `<experiment_dir>/sweep/sweep.yaml`, in its order: the swept values, the last
logged training step and loss, the training throughput (images/s, the mean over the log
intervals after the first, which holds start-up), and the FID (and class accuracy) that
`speed.sweep.evaluate` stored for the run's newest samples. Writes `summary.csv`, `summary.md` and
`summary.png` (a bar per run for each metric) into the sweep folder and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from speed.errors import run_cli
from speed.run import RunDir
from speed.sweep.evaluate import metrics_path, newest_samples
from speed.sweep.state import find_sweep_dir, read_record
from speed.utils.logging import read_metrics

METRIC_COLUMNS = ("step", "loss", "images_per_s", "fid", "class_accuracy")
PLOTTED = {"loss": "final training loss", "images_per_s": "images / s", "fid": "FID"}
DIGITS = {"loss": 5, "images_per_s": 4, "fid": 5, "class_accuracy": 4}  # significant digits


def train_metrics(run_dir: Path) -> dict:
    """{"step", "loss", "images_per_s"} of the run's training log ({} when it has none)."""
    lines = [m for m in read_metrics(RunDir(run_dir).logs) if "loss" in m]
    if not lines:
        return {}
    speeds = [m["images_per_s"] for m in lines[1:] or lines]
    return {
        "step": lines[-1]["step"],
        "loss": lines[-1]["loss"],
        "images_per_s": sum(speeds) / len(speeds),
    }


def eval_metrics(run_dir: Path) -> dict:
    """{"fid", ["class_accuracy"], "features"} stored for the run's newest samples, or {}."""
    npz_path = newest_samples(run_dir)
    path = None if npz_path is None else metrics_path(npz_path)
    if path is None or not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    found = {k: stored[k]["value"] for k in ("fid", "class_accuracy") if k in stored}
    return {**found, "features": stored["extractor"]}


def collect(sweep_dir: Path) -> tuple[list[str], list[dict]]:
    """(columns, rows) of the sweep: one row per run, metrics it lacks left out of its dict."""
    record = read_record(sweep_dir)
    keys = list(record.get("keys", []))
    rows = []
    for entry in record.get("runs", []):
        run_dir = Path(entry["dir"])
        row = {"run": entry["name"], **entry.get("params", {})}
        rows.append({**row, **train_metrics(run_dir), **eval_metrics(run_dir)})
    present = [c for c in (*METRIC_COLUMNS, "features") if any(c in row for row in rows)]
    return ["run", *keys, *present], rows


def write_csv(columns: list[str], rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    """A GitHub Markdown table; numbers rounded (DIGITS), missing values shown as '-'. Features
    shared by every scored run are named once below the table instead of in a column."""
    features = {row["features"] for row in rows if "features" in row}
    note = []
    if len(features) == 1:
        columns = [c for c in columns if c != "features"]
        note = ["", f"FID features: {features.pop()}"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(column), DIGITS.get(column)) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + note) + "\n"


def plot_summary(rows: list[dict], path: Path) -> Path | None:
    """Horizontal bars, one panel per metric in PLOTTED that some run has; None if none has."""
    from matplotlib.figure import Figure

    metrics = [m for m in PLOTTED if any(m in row for row in rows)]
    if not metrics:
        return None
    figure = Figure(figsize=(4.5 * len(metrics), 1.2 + 0.35 * len(rows)))
    names = [row["run"] for row in rows]
    for i, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), i + 1)
        values = [row.get(metric, math.nan) for row in rows]
        bars = axes.barh(range(len(rows)), values, color="tab:blue")
        axes.bar_label(bars, fmt="%.4g", fontsize=7, padding=2)
        axes.set_yticks(range(len(rows)), names if i == 0 else [""] * len(rows), fontsize=8)
        axes.invert_yaxis()
        axes.set_title(PLOTTED[metric], fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def summarize(sweep_dir: Path) -> tuple[list[str], list[dict], list[Path]]:
    """Write summary.csv, summary.md and (when there are metrics) summary.png into `sweep_dir`;
    returns (columns, rows, written paths)."""
    columns, rows = collect(sweep_dir)
    written = [write_csv(columns, rows, sweep_dir / "summary.csv"), sweep_dir / "summary.md"]
    written[1].write_text(markdown_table(columns, rows))
    png = plot_summary(rows, sweep_dir / "summary.png")
    return columns, rows, written + ([png] if png else [])


def _cell(value, digits: int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment_dir", help="the sweep's experiment_dir (or its sweep/ folder)")
    args = parser.parse_args(argv)

    def summary() -> int:
        sweep_dir = find_sweep_dir(args.experiment_dir)
        columns, rows, written = summarize(sweep_dir)
        print(markdown_table(columns, rows), end="")
        print("wrote " + ", ".join(str(path) for path in written))
        return 0

    return run_cli(summary)


if __name__ == "__main__":
    sys.exit(main())
