"""evaluations/domain_classifier.py: training on synthetic data, reloading, feature shapes."""

import sys
import types

import numpy as np
import pytest
import torch

from evaluations import domain_classifier
from evaluations.domain_classifier import DomainFeatures, main, train_domain_classifier
from evaluations.features import extract_features


def _stripes(n, seed):
    """Class 0: horizontal stripes, class 1: vertical stripes, with noise; uint8 [n, 12, 12]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    stripes = np.tile((np.arange(12) % 4 < 2) * 200.0, (12, 1))  # vertical stripes
    images = np.where(labels[:, None, None] == 1, stripes, stripes.T) + rng.uniform(
        0, 55, (n, 12, 12)
    )
    return images.astype(np.uint8), labels


def test_train_save_load_and_extract(tmp_path):
    images, labels = _stripes(48, seed=0)
    path = tmp_path / "dc.pt"
    meta = train_domain_classifier(
        images, labels, path, epochs=3, batch_size=16, lr=3e-3, val_fraction=0.25, progress=False
    )
    assert path.is_file()
    assert (meta["num_classes"], meta["image_size"], meta["in_channels"]) == (2, 12, 1)
    assert (meta["num_train"], meta["num_val"]) == (36, 12)
    extractor = DomainFeatures(path)
    assert extractor.has_logits and extractor.classifies_dataset_labels
    assert extractor.num_features == 256 and "not comparable to Inception FID" in extractor.name
    out = extract_features(extractor, images[:5, :, :, None], batch_size=2, progress=False)
    assert out.features.shape == (5, 256) and out.logits.shape == (5, 2)
    assert out.features.min() >= 0  # ReLU'd penultimate activations
    # The reloaded weights reproduce the trained model: its accuracy over all 48 images is the
    # size-weighted mean of the reported train (36) and held-out (12) accuracies.
    logits = extract_features(extractor, images, progress=False).logits
    reported = (36 * meta["train_accuracy"] + 12 * meta["val_accuracy"]) / 48
    assert (logits.argmax(1) == labels).mean() == pytest.approx(reported)


def test_rgb_and_float_inputs_match_grayscale(tmp_path):
    images, labels = _stripes(8, seed=1)
    train_domain_classifier(images, labels, tmp_path / "dc.pt", epochs=1, progress=False)
    extractor = DomainFeatures(tmp_path / "dc.pt")
    gray = extract_features(extractor, images[..., None], progress=False).features
    rgb = extract_features(extractor, np.repeat(images[..., None], 3, axis=3), progress=False)
    as_float = torch.from_numpy(images[:, None]).float() / 127.5 - 1
    floats = extract_features(extractor, as_float, progress=False)
    np.testing.assert_allclose(rgb.features, gray, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(floats.features, gray, rtol=1e-4, atol=1e-5)


def test_missing_weights_name_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m evaluations.domain_classifier --out"):
        DomainFeatures(tmp_path / "none.pt")


def test_bad_training_input_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="one label each"):
        train_domain_classifier(np.zeros((4, 8, 8), np.uint8), np.zeros(3), tmp_path / "x.pt")


def test_cli_trains_on_the_dataset_loader(tmp_path, monkeypatch, capsys):
    images, labels = _stripes(20, seed=2)
    animals = types.ModuleType("speed.data.animals")  # stands in for the real 10,000 images
    animals.load_animal_mnist_arrays = lambda: (images, labels)
    monkeypatch.setitem(sys.modules, "speed.data.animals", animals)
    assert main(["--out", str(tmp_path / "dc.pt"), "--epochs", "1"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    assert DomainFeatures(tmp_path / "dc.pt").meta["num_train"] == 18


def test_ensure_domain_classifier_trains_once_when_missing(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), np.arange(8) % 2
    monkeypatch.setattr("speed.data.animals.load_animal_mnist_arrays", lambda: (images, labels))
    path = domain_classifier.ensure_domain_classifier(tmp_path / "domain.pt")
    assert DomainFeatures(path).meta["num_classes"] == 2
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(domain_classifier, "train_domain_classifier", None)  # not called again
    assert domain_classifier.ensure_domain_classifier(path) == path
    assert path.stat().st_mtime_ns == stamp
