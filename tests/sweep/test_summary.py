"""speed.sweep.summary: final metrics of each run of a sweep, from its files."""

import csv
import json

import yaml

from speed.sweep.summary import markdown_table, summarize, train_metrics


def _write_run(run_dir, log_lines=(), fid=None):
    logs = run_dir / "train/logs"
    logs.mkdir(parents=True)
    (logs / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in log_lines))
    if fid is not None:
        (run_dir / "inference").mkdir()
        (run_dir / "inference/0000300.npz").write_bytes(b"")
        metrics = {"extractor": "domain", "fid": {"value": fid}, "class_accuracy": {"value": 0.5}}
        (run_dir / "inference/0000300.metrics.json").write_text(json.dumps(metrics))


def test_train_metrics_are_the_last_loss_and_the_mean_speed_after_start_up(tmp_path):
    lines = [
        {"step": 100, "loss": 0.3, "images_per_s": 10.0},
        {"step": 200, "loss": 0.2, "images_per_s": 20.0},
        {"step": 250, "preempted": 1},
        {"step": 300, "loss": 0.1, "images_per_s": 40.0},
    ]
    _write_run(tmp_path / "run", lines)
    assert train_metrics(tmp_path / "run") == {"step": 300, "loss": 0.1, "images_per_s": 30.0}
    with (tmp_path / "run/train/logs/metrics.jsonl").open("a") as f:
        f.write('{"step": 400, "lo')  # a line cut short by a kill
    assert train_metrics(tmp_path / "run")["step"] == 300
    assert train_metrics(tmp_path / "nothing") == {}


def test_summary_table_of_two_runs_one_unfinished(tmp_path):
    sweep_dir = tmp_path / "sweep"
    line = {"step": 300, "loss": 0.123456789, "images_per_s": 50.0}
    _write_run(sweep_dir / "k=1", [line], fid=12.3456789)
    _write_run(sweep_dir / "k=5")
    runs = [
        {"name": name, "dir": str(sweep_dir / name), "params": {"diffusion.k": k}}
        for name, k in (("k=1", 1), ("k=5", 5))
    ]
    (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump({"keys": ["diffusion.k"], "runs": runs}))

    columns, rows, written = summarize(sweep_dir)
    assert columns == [
        "run", "diffusion.k", "step", "loss", "images_per_s", "fid", "class_accuracy", "features"
    ]  # fmt: skip
    assert markdown_table(columns, rows).splitlines() == [
        "| run | diffusion.k | step | loss | images_per_s | fid | class_accuracy |",
        "|---|---|---|---|---|---|---|",
        "| k=1 | 1 | 300 | 0.12346 | 50 | 12.346 | 0.5 |",
        "| k=5 | 5 | - | - | - | - | - |",
        "",
        "FID features: domain",
    ]
    with open(sweep_dir / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert table[0]["fid"] == "12.3456789" and table[1]["loss"] == ""
    assert (sweep_dir / "summary.png").stat().st_size > 0 and len(written) == 3
