"""python -m evaluations.fid / evaluations.evaluator: outputs, JSON, --save-ref, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluations import evaluator, fid
from evaluations.domain_classifier import DomainFeatures, train_domain_classifier
from evaluations.evaluate import compute_metrics
from evaluations.image_io import load_source

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, random_images):
    """A tiny domain classifier and reference / sample .npz files of 16 x 16 images."""
    root = tmp_path_factory.mktemp("cli")
    ref, fake = random_images(20, n=24, size=16), random_images(21, n=16, size=16) // 2
    labels = np.arange(24) % 3
    train_domain_classifier(ref[..., 0], labels, root / "dc.pt", epochs=1, progress=False)
    np.savez(root / "ref.npz", arr_0=ref, arr_1=labels)
    np.savez(root / "fake.npz", arr_0=fake, arr_1=np.arange(16) % 3)
    return root


def _domain_args(root):
    return ["--features", "domain", "--domain", str(root / "dc.pt"), "--quiet"]


def test_evaluator_prints_and_writes_every_metric(demo, capsys):
    out = demo / "metrics.json"
    args = [str(demo / "ref.npz"), str(demo / "fake.npz"), "--out", str(out)]
    assert evaluator.main(args + _domain_args(demo) + ["--kid-subset-size", "8"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    expected = compute_metrics(
        load_source(demo / "ref.npz"),
        load_source(demo / "fake.npz"),
        DomainFeatures(demo / "dc.pt"),
        progress=False,
        kid_subset_size=8,
    )
    for key in ("fid", "inception_score", "kid", "precision", "recall", "class_accuracy"):
        assert result[key]["value"] == pytest.approx(expected[key]["value"], rel=1e-9)
        assert result[key]["extractor"].startswith("domain-classifier features")
    assert result["sfid"]["value"] is None
    assert "sFID: unavailable (feature extractor has no spatial features" in printed
    assert f"FID: {expected['fid']['value']:.4f}" in printed


def test_save_ref_then_fid_from_statistics(demo, capsys):
    stats = demo / "stats.npz"
    assert (
        evaluator.main([str(demo / "ref.npz"), "--save-ref", str(stats)] + _domain_args(demo)) == 0
    )
    assert stats.is_file() and "saved reference statistics" in capsys.readouterr().out
    fid.main([str(demo / "ref.npz"), str(demo / "fake.npz")] + _domain_args(demo))
    from_images = capsys.readouterr().out
    assert fid.main([str(stats), str(demo / "fake.npz")] + _domain_args(demo)) == 0
    from_stats = capsys.readouterr().out
    assert from_stats.splitlines()[0].startswith("FID: ") and "FID: 0.0000" not in from_stats
    assert from_stats.splitlines()[0] == from_images.splitlines()[0]
    assert "features: domain-classifier features" in from_stats


def test_missing_path_is_a_one_line_error(tmp_path, capsys):
    assert fid.main([str(tmp_path / "nope.npz"), str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nope.npz" in err


def test_missing_domain_weights_is_a_one_line_error(demo, tmp_path, capsys):
    args = [str(demo / "ref.npz"), str(demo / "fake.npz"), "--features", "domain"]
    assert evaluator.main(args + ["--domain", str(tmp_path / "no.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python -m evaluations.domain_classifier" in err


def test_evaluator_needs_samples_or_save_ref(demo):
    with pytest.raises(SystemExit) as info:
        evaluator.main([str(demo / "ref.npz")])
    assert info.value.code == 2


def test_module_entry_point_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SPEED_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "evaluations.fid", str(tmp_path / "a.npz"), str(tmp_path / "b")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
