"""speed.experiments.curve: speed-up from FID curves, CSV/PNG output, and a tiny run scored per
checkpoint (with skip on re-run) through the library and the command line."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluations import reference_cache
from evaluations.domain_classifier import train_domain_classifier
from evaluations.evaluate import source_stats
from evaluations.image_io import ImageSource
from speed.config import load_config
from speed.experiments import curve
from speed.runners.train import train

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = str(REPO / "configs/image/animals/base.yaml")


# ---- speed-up on hand-made curves ----

BASELINE = {100: 50.0, 200: 30.0, 300: 20.0, 400: 10.0}  # final FID 10 at step 400


@pytest.mark.parametrize(
    "other, expected",
    [
        ({100: 30.0, 200: 10.0, 300: 5.0}, 400 / 200),  # reaches 10 exactly at step 200
        ({100: 40.0, 200: 20.0, 300: 5.0}, 400 / (200 + 100 * 10 / 15)),  # crossing at 266.67
        ({100: 5.0}, 400 / 100),  # already below at its first evaluated step
    ],
)
def test_speedup_against_hand_made_curves(other, expected):
    assert curve.speedup(BASELINE, other) == pytest.approx(expected, rel=1e-12, abs=0)


def test_speedup_is_none_when_the_other_run_never_gets_there():
    assert curve.speedup(BASELINE, {100: 40.0, 200: 15.0, 300: float("nan")}) is None
    # a NaN point is skipped: the crossing is interpolated between its finite neighbours
    assert curve.steps_to_reach({100: 40.0, 200: float("nan"), 300: 0.0}, 10.0) == 250.0


def test_speedup_uses_the_baselines_first_crossing_of_its_final_fid():
    # baseline: 20 -> 5 between steps 100 and 200 passes 8 at 100 + 100 * 12/15 = 180
    baseline = {100: 20.0, 200: 5.0, 300: 8.0}
    assert curve.steps_to_reach(baseline, 8.0) == pytest.approx(180.0, rel=1e-12)
    assert curve.speedup(baseline, {50: 8.0}) == pytest.approx(180.0 / 50.0, rel=1e-12)
    assert curve.speedup(baseline, baseline) == 1.0


def test_speedup_rejects_empty_or_non_positive_steps():
    with pytest.raises(ValueError, match="empty"):
        curve.speedup({}, {100: 1.0})
    with pytest.raises(ValueError, match="positive"):
        curve.speedup({0: 3.0, 100: 1.0}, {100: 1.0})


def test_select_checkpoints_takes_every_kth_and_the_newest():
    ckpts = [Path(f"{s:07d}.pt") for s in (100, 200, 300, 400, 500)]
    assert curve.select_checkpoints(ckpts, 1) == ckpts
    assert curve.select_checkpoints(ckpts, 2) == [ckpts[0], ckpts[2], ckpts[4]]
    assert curve.select_checkpoints(ckpts, 3) == [ckpts[0], ckpts[3], ckpts[4]]
    with pytest.raises(ValueError, match="every"):
        curve.select_checkpoints(ckpts, 0)


# ---- CSV, PNG and table ----


def _entry(fid, **extra):
    return {"fid": fid, "extractor": "tiny", "num_samples": 8, **extra}


def test_plot_curves_writes_csv_rows_and_a_png(tmp_path):
    results = {
        "base": {200: _entry(30.0), 100: _entry(50.5)},
        "speed": {100: _entry(20.25, class_accuracy=0.5), 200: _entry(10.0, class_accuracy=0.75)},
    }
    csv_path, png_path = curve.plot_curves(results, tmp_path / "out", "FID vs step", log_y=True)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "step", "fid", "class_accuracy", "extractor", "num_samples"]
    got = [(r["run"], int(r["step"]), float(r["fid"]), r["class_accuracy"]) for r in rows]
    assert got == [
        ("base", 100, 50.5, ""),
        ("base", 200, 30.0, ""),
        ("speed", 100, 20.25, "0.5"),
        ("speed", 200, 10.0, "0.75"),
    ]
    assert {r["extractor"] for r in rows} == {"tiny"} and {r["num_samples"] for r in rows} == {"8"}
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png_path) as image:
        assert image.size == (7 * 120, round(4.5 * 120))  # figsize (inches) x dpi

    table = curve.format_table(results)
    # baseline final FID 30 at step 200; "speed" crosses 30 before step 100 -> 200 / 100
    assert table.splitlines()[-1] == "speed-up of speed over base (to its final FID): 2.00x"


# ---- a tiny trained run ----


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """Overrides of a 2-checkpoint run of the demo config (trained here, seconds)."""
    run_dir = tmp_path_factory.mktemp("curve") / "run"
    overrides = [
        f"experiment_dir={run_dir}",
        "max_training_steps=2",
        "ckpt_every=1",
        "log_every=1",
        "sample_every=0",
        "warmup_steps=0",
        "data.batch_size=4",
        "num_steps=2",
        "per_proc_batch_size=4",
        "sample_classes=[0,3]",
        "wandb=disabled",
        "tensorboard=false",
    ]
    train(load_config(DEMO_CONFIG, "train", overrides))
    return run_dir, overrides


@pytest.fixture
def count_inference(monkeypatch):
    """Counts calls of the inference phase made by speed.experiments.curve."""
    calls = []

    def counted(cfg):
        calls.append(cfg.ckpt_path)
        return real(cfg)

    real = curve.inference
    monkeypatch.setattr(curve, "inference", counted)
    return calls


def _fid64(a: np.ndarray, b: np.ndarray) -> float:
    """FID of feature sets [N, D] in float64: tr sqrt(S1 S2) = sum of sqrt eigenvalues."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root)


def test_evaluate_run_scores_each_checkpoint_and_skips_on_rerun(
    trained_run, count_inference, tiny_extractor_cls, tiny_features, random_images
):
    run_dir, overrides = trained_run

    class Classifying(tiny_extractor_cls):
        classifies_dataset_labels = True  # logits = 4 quadrant means, scored as classes 0..3

    extractor = Classifying(with_logits=True)
    ref_images = random_images(7, n=24, size=28)
    ref = source_stats(ImageSource("ref", ref_images), extractor, progress=False)
    kwargs = dict(every=1, progress=False, keep_samples=True)

    results = curve.evaluate_run(DEMO_CONFIG, ref, extractor, 8, overrides, **kwargs)
    assert sorted(results) == [1, 2] and len(count_inference) == 2
    for step in (1, 2):
        samples = np.load(run_dir / f"curve/classifying_n8/inference/{step:07d}.npz")
        fake = tiny_features(samples["arr_0"])
        assert results[step]["fid"] == pytest.approx(
            _fid64(fake, tiny_features(ref_images)), rel=1e-6
        )
        accuracy = np.mean(fake[:, :4].argmax(1) == samples["arr_1"])
        assert results[step]["class_accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert samples["arr_1"].tolist() == [0, 3] * 4
        assert results[step]["num_samples"] == 8
    stored = json.loads((run_dir / "curve/classifying_n8.json").read_text())
    assert {int(s): m["fid"] for s, m in stored["steps"].items()} == curve.fid_curve(results)

    again = curve.evaluate_run(DEMO_CONFIG, ref, extractor, 8, overrides, **kwargs)
    assert again == results and len(count_inference) == 2  # nothing new to evaluate

    with pytest.raises(ValueError, match="another sampling"):
        curve.evaluate_run(DEMO_CONFIG, ref, extractor, 8, [*overrides, "num_steps=3"], **kwargs)


def test_evaluate_run_scores_only_the_chosen_steps(
    trained_run, count_inference, tiny_extractor_cls, random_images
):
    _, overrides = trained_run
    extractor = tiny_extractor_cls()
    real = ImageSource("ref", random_images(8, n=16, size=28))
    ref = source_stats(real, extractor, progress=False)
    kwargs = dict(every=1, progress=False, tag="chosen")
    results = curve.evaluate_run(DEMO_CONFIG, ref, extractor, 4, overrides, steps=[2], **kwargs)
    assert sorted(results) == [2] and [int(Path(c).stem) for c in count_inference] == [2]
    results = curve.evaluate_run(DEMO_CONFIG, ref, extractor, 4, overrides, **kwargs)
    assert sorted(results) == [1, 2] and len(count_inference) == 2  # step 2 was kept


def test_command_line_writes_csv_png_and_reuses_reference_and_results(
    trained_run, count_inference, random_images, monkeypatch, tmp_path, capsys
):
    run_dir, overrides = trained_run
    images = random_images(11, n=20, size=28)
    train_domain_classifier(
        images[..., 0], np.arange(20) % 4, tmp_path / "dc.pt", 1, progress=False
    )
    np.savez(tmp_path / "ref.npz", arr_0=images)
    out = tmp_path / "out"
    argv = ["-c", DEMO_CONFIG, "--ref", str(tmp_path / "ref.npz"), "--out", str(out)]
    argv += ["--features", "domain", "--domain", str(tmp_path / "dc.pt"), "--num-samples", "4"]
    argv += ["--quiet", *overrides]

    assert curve.main(argv) == 0
    assert len(count_inference) == 2
    with open(out / "fid_curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    stored = json.loads((run_dir / "curve/domain_n4.json").read_text())["steps"]
    assert [(r["run"], int(r["step"])) for r in rows] == [("run", 1), ("run", 2)]
    for row in rows:
        entry = stored[row["step"]]
        assert float(row["fid"]) == entry["fid"] and row["num_samples"] == "4"
        assert float(row["class_accuracy"]) == entry["class_accuracy"]
        assert row["extractor"].startswith("domain-classifier features")
    assert (out / "fid_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(out.glob("reference_ref_*.npz"))) == 1
    assert not list((run_dir / "curve/domain_n4/inference").glob("*.npz"))  # samples deleted
    assert "run" in capsys.readouterr().out

    def no_images(*args, **kwargs):
        raise AssertionError("reference images reloaded although their statistics are cached")

    monkeypatch.setattr(reference_cache, "load_source", no_images)
    assert curve.main(argv) == 0
    assert len(count_inference) == 2


def test_command_line_error_is_one_line(tmp_path, capsys):
    argv = ["-c", str(tmp_path / "missing.yaml"), "--ref", str(tmp_path / "ref.npz")]
    assert curve.main(argv + ["--features", "domain", "--domain", str(tmp_path / "dc.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
