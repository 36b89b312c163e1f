"""evaluations/evaluate.py: compute_metrics wiring, availability rules, statistics files."""

import numpy as np
import pytest
from PIL import Image

from evaluations import evaluator, metrics
from evaluations.evaluate import (
    ALL_METRICS,
    METRICS,
    PAIR_PARTS,
    Metric,
    compute_metrics,
    format_report,
    metric_settings,
    source_stats,
)
from evaluations.image_io import ImageSource, load_source
from evaluations.reference import FeatureStats


@pytest.fixture
def image_sets(tmp_path, random_images):
    ref, fake = random_images(10, n=30, size=8), random_images(11, n=20, size=8)
    np.savez(tmp_path / "ref.npz", arr_0=ref)
    np.savez(tmp_path / "fake.npz", arr_0=fake, arr_1=np.arange(20) % 4)
    (tmp_path / "fake").mkdir()
    for i, image in enumerate(fake):
        Image.fromarray(image[..., 0]).save(tmp_path / "fake" / f"{i:04d}.png")
    return tmp_path, ref, fake


def _metrics(ref, fake, extractor, **kw):
    return compute_metrics(ref, fake, extractor, progress=False, kid_subset_size=10, **kw)


def test_values_match_independent_feature_computation(
    image_sets, tiny_extractor_cls, tiny_features
):
    root, ref, fake = image_sets
    result = _metrics(
        load_source(root / "ref.npz"), load_source(root / "fake.npz"), tiny_extractor_cls()
    )
    f_ref, f_fake = tiny_features(ref), tiny_features(fake)
    expected_fid = metrics.frechet_distance(
        *metrics.feature_statistics(f_fake), *metrics.feature_statistics(f_ref)
    )
    assert result["fid"]["value"] == pytest.approx(expected_fid, rel=1e-6)
    assert result["fid"]["extractor"] == "tiny test extractor"
    expected_kid = metrics.kernel_inception_distance(f_fake, f_ref, 100, 10, seed=2020)
    assert (result["kid"]["value"], result["kid"]["std"]) == pytest.approx(expected_kid, rel=1e-6)
    precision, recall = metrics.precision_recall(f_ref, f_fake, k=3)
    assert result["precision"]["value"] == precision and result["recall"]["value"] == recall
    assert result["samples"]["num_images"] == 20 and result["reference"]["num_images"] == 30


def test_npz_and_folder_give_the_same_numbers(image_sets, tiny_extractor_cls):
    root, _, _ = image_sets
    ref = load_source(root / "ref.npz")
    from_npz = _metrics(ref, load_source(root / "fake.npz"), tiny_extractor_cls())
    from_folder = _metrics(ref, load_source(root / "fake"), tiny_extractor_cls())
    for key in ("fid", "kid", "precision", "recall"):
        assert from_folder[key] == from_npz[key]


def test_metrics_without_logits_or_spatial_features_are_unavailable(image_sets, tiny_extractor_cls):
    root, _, _ = image_sets
    result = _metrics(
        load_source(root / "ref.npz"), load_source(root / "fake.npz"), tiny_extractor_cls()
    )
    assert result["inception_score"] == {
        "value": None,
        "unavailable": "feature extractor has no logits",
    }
    assert result["sfid"]["value"] is None and "spatial" in result["sfid"]["unavailable"]
    assert result["class_accuracy"]["value"] is None
    report = format_report(result)
    assert "IS: unavailable (feature extractor has no logits)" in report
    assert "sFID: unavailable (" in report


def test_inception_score_and_class_accuracy_from_logits(
    image_sets, tiny_extractor_cls, tiny_features
):
    root, ref, fake = image_sets
    extractor = tiny_extractor_cls(with_logits=True)
    extractor.classifies_dataset_labels = True
    ref_source = ImageSource("ref", ref, labels=np.zeros(30, np.int64))
    result = _metrics(ref_source, load_source(root / "fake.npz"), extractor)
    logits = tiny_features(fake)[:, :4] / 64.0  # TinyExtractor's logits: quadrant means / 64
    entry = result["inception_score"]
    assert (entry["splits"], entry["protocol"]) == (10, "torch-fidelity")
    expected = metrics.inception_score(logits, splits=10, shuffle=True, seed=2020)
    assert (entry["value"], entry["std"]) == pytest.approx(expected, rel=1e-6)
    adm = _metrics(ref_source, load_source(root / "fake.npz"), extractor, is_protocol="adm")
    assert adm["inception_score"]["splits"] == 1  # 20 images: one split of up to 5000
    expected = metrics.inception_score(logits, splits=1, shuffle=False)[0]
    assert adm["inception_score"]["value"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="unknown is_protocol 'tf'; choose one of"):
        _metrics(ref_source, load_source(root / "fake.npz"), extractor, is_protocol="tf")
    hits = (logits.argmax(1) == np.arange(20) % 4).mean()
    assert result["class_accuracy"]["value"] == pytest.approx(hits)
    assert result["class_accuracy"]["reference_value"] == pytest.approx(
        (tiny_features(ref)[:, :4].argmax(1) == 0).mean()
    )


def test_saved_reference_statistics_give_the_same_numbers(image_sets, tiny_extractor_cls):
    root, _, _ = image_sets
    extractor, fake = tiny_extractor_cls(), load_source(root / "fake.npz")
    direct = _metrics(load_source(root / "ref.npz"), fake, extractor)
    stats = source_stats(load_source(root / "ref.npz"), extractor, progress=False)
    stats.save(root / "stats.npz", with_features=True)
    stats.save(root / "stats_only.npz")
    via_file = _metrics(load_source(root / "stats.npz"), fake, extractor)
    assert via_file["fid"]["value"] == pytest.approx(direct["fid"]["value"], rel=1e-9)
    assert via_file["kid"]["value"] == pytest.approx(direct["kid"]["value"], rel=1e-4)  # float32
    assert via_file["precision"]["value"] == direct["precision"]["value"]
    no_features = _metrics(load_source(root / "stats_only.npz"), fake, extractor)
    assert no_features["fid"]["value"] == pytest.approx(direct["fid"]["value"], rel=1e-9)
    assert "--save-ref-features" in no_features["kid"]["unavailable"]


def test_statistics_of_another_extractor_are_refused(image_sets, tiny_extractor_cls):
    root, _, _ = image_sets
    FeatureStats(np.zeros(5), np.eye(5), "other net", "test").save(root / "other.npz")
    with pytest.raises(ValueError, match="were made with 'other net'"):
        _metrics(
            load_source(root / "other.npz"), load_source(root / "fake.npz"), tiny_extractor_cls()
        )


def test_adm_statistics_are_used_only_with_the_tf_inception(
    image_sets, tiny_extractor_cls, tiny_features
):
    root, ref, fake = image_sets
    mu, sigma = np.full(5, 100.0), np.diag(np.arange(1.0, 6.0))
    np.savez(root / "adm.npz", arr_0=ref, mu=mu, sigma=sigma)  # no 'extractor' key
    extractor = tiny_extractor_cls()
    plain = _metrics(load_source(root / "adm.npz"), load_source(root / "fake.npz"), extractor)
    assert "ignored" in plain["reference"]["origin"]
    expected_own = metrics.frechet_distance(
        *metrics.feature_statistics(tiny_features(fake)),
        *metrics.feature_statistics(tiny_features(ref)),
    )
    assert plain["fid"]["value"] == pytest.approx(expected_own, rel=1e-6)
    extractor.tf_inception = True  # pretend: its features are what ADM's statistics hold
    used = _metrics(load_source(root / "adm.npz"), load_source(root / "fake.npz"), extractor)
    expected = metrics.frechet_distance(*metrics.feature_statistics(tiny_features(fake)), mu, sigma)
    assert used["fid"]["value"] == pytest.approx(expected, rel=1e-6)
    assert "precomputed statistics" in used["reference"]["origin"]


def _mean_gap(ref, fake, extractor, *, power: int = 1) -> dict:
    """A toy metric: |mean feature difference| ** power."""
    gap = float(np.abs(fake.mu - ref.mu).mean()) ** power
    return {"value": gap, "power": power, "extractor": extractor.name}


def test_a_registered_metric_is_computed_reported_and_set_from_the_command_line(
    image_sets, tiny_extractor_cls, tiny_features, monkeypatch
):
    monkeypatch.setitem(METRICS, "mean_gap", Metric(_mean_gap, "mean gap", help={"power": "p"}))
    root, ref, fake = image_sets
    result = _metrics(
        load_source(root / "ref.npz"),
        load_source(root / "fake.npz"),
        tiny_extractor_cls(),
        which=("fid", "mean_gap"),
        power=2,
    )
    gap = np.abs(tiny_features(fake).mean(0) - tiny_features(ref).mean(0)).mean()
    assert result["mean_gap"]["value"] == pytest.approx(gap**2, rel=1e-6)
    assert result["mean_gap"]["power"] == 2
    assert f"mean gap: {result['mean_gap']['value']:.4f}" in format_report(result)
    args = evaluator.parse_args(["ref.npz", "fake.npz", "--power", "3"])
    assert args.power == 3 and args.pr_k == 3 and args.kid_subsets == 100


def test_the_registry_lists_every_metric_and_setting_once():
    assert ALL_METRICS == tuple(m for m in METRICS if m != "pair_alignment")  # asked for only
    settings = metric_settings()
    assert settings["is_protocol"][0] == "torch-fidelity" and "adm: " in settings["is_protocol"][1]
    assert {name: default for name, (default, _) in settings.items()} == {
        "is_protocol": "torch-fidelity",
        "seed": 2020,  # torch-fidelity's rng_seed
        "kid_subsets": 100,
        "kid_subset_size": 1000,
        "pr_k": 3,
    }
    labels = [label for name, metric in METRICS.items() for label in metric.labels(name).values()]
    assert labels == ["FID", "sFID", "IS", "KID", "precision", "recall", "class accuracy",
                      *PAIR_PARTS.values()]  # fmt: skip
    for metric in METRICS.values():  # explained on the command line, one default per name
        assert set(metric.help) == set(metric.settings)
        for name, default in metric.settings.items():
            assert metric_settings()[name][0] == default


def test_unknown_metric_or_setting_is_refused_with_the_closest_name(image_sets, tiny_extractor_cls):
    root, _, _ = image_sets
    ref, fake = load_source(root / "ref.npz"), load_source(root / "fake.npz")
    with pytest.raises(ValueError, match="did you mean 'kid_subsets'"):
        _metrics(ref, fake, tiny_extractor_cls(), kid_subset=5)
    with pytest.raises(ValueError, match="unknown metrics"):
        _metrics(ref, fake, tiny_extractor_cls(), which=("fdi",))
