"""main.py -m with the local launcher: a 2x2 sweep of tiny trainings, re-runs, inference."""

import json

import numpy as np
import pytest
import torch
import yaml

from evaluations.evaluate import source_stats
from evaluations.features import FeatureExtractor, to_float_nchw
from evaluations.image_io import load_npz
from speed.sweep.evaluate import evaluate_sweep, metrics_path
from speed.sweep.summary import summarize
from speed.utils.logging import read_metrics

NAMES = [
    "diffusion.k=1,diffusion.lam=0.6",
    "diffusion.k=1,diffusion.lam=0.8",
    "diffusion.k=5,diffusion.lam=0.6",
    "diffusion.k=5,diffusion.lam=0.8",
]


@pytest.fixture(scope="module")
def sweep_words(tmp_path_factory, demo_config, tiny_overrides):
    """fn(phase) -> main.py words of a 2x2 SpeeD sweep (k x lam) of 2-step tiny runs."""
    root = tmp_path_factory.mktemp("sweep")
    words = [*tiny_overrides(root), "sample_every=0", "tensorboard=false", "diffusion.faster=true"]

    def make(phase: str) -> list[str]:
        return ["-c", demo_config, "-p", phase, "-m", "diffusion.k=1,5", "diffusion.lam=0.6,0.8"]

    return lambda phase: [*make(phase), *words], root


@pytest.fixture(scope="module")
def trained(sweep_words, cli):
    """The 2x2 sweep trained once; returns its sweep folder."""
    words, root = sweep_words
    assert cli(words("train")) == 0
    return root / "sweep"


@pytest.mark.slow
def test_four_runs_in_four_folders_with_their_values(trained):
    for name in NAMES:
        cfg = yaml.safe_load((trained / name / "train/config.yaml").read_text())
        k, lam = (float(part.split("=")[1]) for part in name.split(","))
        assert (cfg["diffusion"]["k"], cfg["diffusion"]["lam"]) == (k, lam)
        assert cfg["experiment_dir"] == str(trained / name)
        assert (trained / name / "train/checkpoints/0000002.pt").is_file()
    record = yaml.safe_load((trained / "sweep.yaml").read_text())
    assert [run["name"] for run in record["runs"]] == NAMES
    assert [run["status"] for run in record["runs"]] == [{"train": "done"}] * 4
    assert record["runs"][3]["params"] == {"diffusion.k": 5, "diffusion.lam": 0.8}


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_resumes_unfinished_ones(trained, sweep_words, cli, capsys):
    words, _ = sweep_words
    final = trained / NAMES[2] / "train/checkpoints/0000002.pt"
    final.unlink()  # as if killed after step 1's checkpoint
    kept = {name: (trained / name / "train/checkpoints/0000002.pt") for name in NAMES}
    before = {name: path.stat().st_mtime_ns for name, path in kept.items() if path.is_file()}
    capsys.readouterr()
    assert cli(words("train")) == 0
    out = capsys.readouterr().out
    assert out.count("finished, skipped") == 3
    assert f"[3/4] {NAMES[2]}: resuming train" in out
    assert final.is_file()
    assert {name: kept[name].stat().st_mtime_ns for name in before} == before
    steps = [m["step"] for m in read_metrics(trained / NAMES[2] / "train/logs")]
    assert steps == [1, 2, 2]  # the resumed run logged step 2 again (from step 1's checkpoint)


@pytest.mark.slow
def test_summary_has_one_row_per_run_with_its_final_metrics(trained):
    columns, rows, written = summarize(trained)
    assert columns[:3] == ["run", "diffusion.k", "diffusion.lam"]
    assert [row["run"] for row in rows] == NAMES
    for row in rows:
        last = read_metrics(trained / row["run"] / "train/logs")[-1]
        assert (row["step"], row["loss"]) == (2, last["loss"])
        assert row["images_per_s"] > 0
    assert [path.name for path in written] == ["summary.csv", "summary.md", "summary.png"]
    assert len((trained / "summary.csv").read_text().splitlines()) == 1 + 4
    assert len((trained / "summary.md").read_text().splitlines()) == 2 + 4


@pytest.mark.parametrize(
    "sweep",
    [
        ["diffusion.k=1,,5"],  # bad syntax
        ["diffusion.k=1,5", "diffusion.lamb=0.6"],  # unknown key
        ["diffusion.k=1,5", "ckpt_every=1,x"],  # a wrong type in the second half only
    ],
)
def test_mistakes_stop_the_sweep_before_any_run(tmp_path, demo_config, cli, capsys, sweep):
    words = ["-c", demo_config, "-p", "train", "-m", *sweep, f"experiment_dir={tmp_path}"]
    assert cli(words) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_inference_sweep_of_untrained_runs_fails_naming_the_first(
    tmp_path, demo_config, cli, capsys
):
    words = ["-c", demo_config, "-p", "inference", "-m", "seed=1,2", f"experiment_dir={tmp_path}"]
    assert cli(words) == 2
    assert capsys.readouterr().err.startswith("error: run 'seed=1': no checkpoint in ")
    assert list(tmp_path.iterdir()) == []


class MeanStdFeatures(FeatureExtractor):
    """Two features per image: mean and standard deviation of its gray levels (0..255)."""

    name = "mean-std test features"
    num_features = 2

    def activations(self, images):
        x = to_float_nchw(images).flatten(1)
        return {"features": torch.stack([x.mean(1), x.std(1)], dim=1)}


@pytest.mark.slow
def test_inference_sweep_then_fid_of_every_run(trained, sweep_words, cli, capsys):
    words, _ = sweep_words
    assert cli(words("inference")) == 0
    npzs = [trained / name / "inference/0000002.npz" for name in NAMES]
    assert all(p.is_file() for p in npzs)
    capsys.readouterr()
    assert cli(words("inference")) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 4

    extractor = MeanStdFeatures()
    ref = load_npz(npzs[0])  # the first run's own samples: its FID is 0
    results = evaluate_sweep(
        trained, source_stats(ref, extractor), "ref", extractor, progress=False
    )
    fids = [results[name]["fid"]["value"] for name in NAMES]
    assert fids[0] == pytest.approx(0.0, abs=1e-6) and all(f > 0 for f in fids[1:])
    stored = json.loads(metrics_path(npzs[1]).read_text())
    assert stored["fid"]["value"] == fids[1] and stored["extractor"] == extractor.name
    _, rows, _ = summarize(trained)
    assert [row["fid"] for row in rows] == fids
    assert np.all([row["features"] == extractor.name for row in rows])


def test_an_interrupted_run_stops_the_sweep_and_is_marked_interrupted(
    tmp_path, demo_config, tiny_overrides, cli, capsys, monkeypatch
):
    import shlex
    import signal

    from speed.errors import Interrupted
    from speed.runners import train as train_module

    def stopped(cfg):
        raise Interrupted("ckpt.pt", 3, signal.SIGTERM)

    monkeypatch.setattr(train_module, "train", stopped)
    words = ["-c", demo_config, "-p", "train", "-m", "seed=0,1", *tiny_overrides(tmp_path)]
    assert cli(words) == 143
    record = yaml.safe_load((tmp_path / "sweep/sweep.yaml").read_text())
    statuses = [run["status"]["train"] for run in record["runs"]]
    assert statuses == ["interrupted", "pending"]
    line = capsys.readouterr().err.strip().splitlines()[-1]
    again = shlex.join(["-m", "seed=0,1", *tiny_overrides(tmp_path)])
    assert line.startswith("interrupted (SIGTERM) at step 3: saved ckpt.pt; resume with: python ")
    assert line.endswith(again) and "resume=true" not in line
