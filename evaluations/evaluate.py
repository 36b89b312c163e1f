"""Metrics between a reference set and a sample set: features -> statistics -> metric formulas.

`compute_metrics(reference, samples, extractor)` returns a JSON-ready dict with one entry per
metric: `{"value": float, "extractor": name, ...settings}` or, when the inputs cannot give that
metric, `{"value": None, "unavailable": reason}` (never a number from the wrong network).
"""

from __future__ import annotations

import math

import numpy as np

from evaluations import metrics
from evaluations.features import FeatureExtractor, InceptionV3Features, extract_features
from evaluations.image_io import ImageSource
from evaluations.reference import FeatureStats

ALL_METRICS = ("fid", "sfid", "inception_score", "kid", "precision_recall", "class_accuracy")
FEATURE_KINDS = ("inception", "domain")


def build_extractor(
    kind: str = "inception", inception_path=None, domain_path=None
) -> FeatureExtractor:
    """`inception`: InceptionV3Features(inception_path); `domain`: DomainFeatures(domain_path)."""
    if kind == "inception":
        return InceptionV3Features(inception_path)
    if kind == "domain":
        from evaluations.domain_classifier import DomainFeatures

        return DomainFeatures(domain_path)
    raise ValueError(f"unknown feature extractor {kind!r}; choose one of {FEATURE_KINDS}")


def stats_mismatch(stats: FeatureStats, extractor: FeatureExtractor) -> str | None:
    """Why `stats` cannot be compared with features of `extractor`, or None when they can."""
    if stats.extractor is not None and stats.extractor != extractor.name:
        return f"{stats.origin} were made with '{stats.extractor}', not '{extractor.name}'"
    if stats.extractor is None and not extractor.tf_inception:
        return (
            f"{stats.origin} name no extractor (e.g. ADM's TF Inception); use the default Inception"
        )
    if stats.mu.shape != (extractor.num_features,):
        return f"{stats.origin} are {stats.mu.shape[0]}-d, the features {extractor.num_features}-d"
    return None


def source_stats(
    source: ImageSource | FeatureStats,
    extractor: FeatureExtractor,
    batch_size: int = 50,
    device=None,
    progress: bool = True,
) -> FeatureStats:
    """Statistics of an image set (extracting features), or a loaded statistics file (checked).

    Statistics stored beside images (ADM reference batches) replace the computed FID/sFID
    statistics when they match the extractor; KID and precision/recall use the images' features.
    """
    if isinstance(source, FeatureStats):
        reason = stats_mismatch(source, extractor)
        if reason is not None:
            raise ValueError(f"{reason}; recompute them with `evaluations.evaluator --save-ref`")
        return source
    activations = extract_features(extractor, source.images, batch_size, device, progress)
    origin = f"computed from {len(source)} images in {source.path}"
    stats = FeatureStats.from_activations(activations, extractor.name, origin, source.labels)
    if source.stats is not None:
        reason = stats_mismatch(source.stats, extractor)
        if reason is None:
            stats.mu, stats.sigma = source.stats.mu, source.stats.sigma
            used = "FID"
            if source.stats.mu_s is not None:
                stats.mu_s, stats.sigma_s = source.stats.mu_s, source.stats.sigma_s
                used = "FID, sFID"
            stats.origin = f"{source.stats.origin} ({used}); features {origin} (other metrics)"
        else:
            stats.origin = f"{origin} (ignored: {reason})"
    return stats


def _unavailable(reason: str) -> dict:
    return {"value": None, "unavailable": reason}


def _fid(ref: FeatureStats, fake: FeatureStats, name: str, **_) -> dict:
    return {
        "value": metrics.frechet_distance(fake.mu, fake.sigma, ref.mu, ref.sigma),
        "extractor": name,
    }


def _sfid(ref: FeatureStats, fake: FeatureStats, name: str, **_) -> dict:
    if fake.mu_s is None and ref.mu_s is None:
        return _unavailable(
            "feature extractor has no spatial features; sFID uses Inception mixed_6/conv"
        )
    if fake.mu_s is None or ref.mu_s is None:
        return _unavailable("reference or sample statistics hold no spatial statistics (mu_s)")
    value = metrics.frechet_distance(fake.mu_s, fake.sigma_s, ref.mu_s, ref.sigma_s)
    return {"value": value, "extractor": name}


def _inception_score(ref, fake: FeatureStats, name: str, is_split_size: int, **_) -> dict:
    if fake.logits is None:
        return _unavailable("feature extractor has no logits")
    splits = min(len(fake.logits), math.ceil(len(fake.logits) / is_split_size))
    mean, std = metrics.inception_score(fake.logits, splits=splits, from_logits=True)
    return {"value": mean, "std": std, "splits": splits, "extractor": name}


def _kid(ref, fake, name: str, kid_subsets: int, kid_subset_size: int, seed: int, **_) -> dict:
    if ref.features is None or fake.features is None:
        return _unavailable("statistics file holds no features (save with --save-ref-features)")
    size = min(kid_subset_size, len(ref.features), len(fake.features))
    if size < 2:
        return _unavailable("KID needs at least 2 images on each side")
    rng = np.random.default_rng(seed)
    mean, std = metrics.kernel_inception_distance(
        fake.features, ref.features, kid_subsets, size, rng
    )
    return {
        "value": mean,
        "std": std,
        "subset_size": size,
        "num_subsets": kid_subsets,
        "extractor": name,
    }


def _precision_recall(ref, fake, name: str, pr_k: int, **_) -> dict:
    """Two entries at once: {"precision": ..., "recall": ...}."""
    if ref.features is None or fake.features is None:
        reason = "statistics file holds no features (save with --save-ref-features)"
        return {"precision": _unavailable(reason), "recall": _unavailable(reason)}
    if min(len(ref.features), len(fake.features)) <= pr_k:
        reason = f"needs more than k={pr_k} images on each side"
        return {"precision": _unavailable(reason), "recall": _unavailable(reason)}
    precision, recall = metrics.precision_recall(ref.features, fake.features, pr_k)
    return {
        "precision": {"value": precision, "k": pr_k, "extractor": name},
        "recall": {"value": recall, "k": pr_k, "extractor": name},
    }


def _class_accuracy(ref, fake, name: str, classifies_labels: bool, **_) -> dict:
    if not classifies_labels:
        return _unavailable("feature extractor does not classify the dataset's labels")
    if fake.labels is None or fake.logits is None:
        return _unavailable("samples carry no labels (arr_1)")
    result = {"value": metrics.class_accuracy(fake.logits, fake.labels), "extractor": name}
    if ref.labels is not None and ref.logits is not None:
        result["reference_value"] = metrics.class_accuracy(ref.logits, ref.labels)
    return result


METRIC_FUNCTIONS = {
    "fid": _fid,
    "sfid": _sfid,
    "inception_score": _inception_score,
    "kid": _kid,
    "precision_recall": _precision_recall,
    "class_accuracy": _class_accuracy,
}


def compute_metrics(
    reference: ImageSource | FeatureStats,
    samples: ImageSource | FeatureStats,
    extractor: FeatureExtractor,
    which: tuple[str, ...] = ALL_METRICS,
    batch_size: int = 50,
    device=None,
    progress: bool = True,
    kid_subsets: int = 100,  # KID: random subset pairs
    kid_subset_size: int = 1000,  # KID: images per subset (capped at the set sizes)
    pr_k: int = 3,  # precision/recall: k-th neighbour radius
    is_split_size: int = 5000,  # Inception Score: images per split, as ADM's evaluator
    seed: int = 0,  # KID subset draws
) -> dict:
    """Metrics of `samples` against `reference`; see the module docstring for the entries."""
    unknown = set(which) - set(METRIC_FUNCTIONS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {ALL_METRICS}")
    ref = source_stats(reference, extractor, batch_size, device, progress)
    fake = source_stats(samples, extractor, batch_size, device, progress)
    result = {
        "extractor": extractor.name,
        "reference": {"origin": ref.origin, "num_images": ref.num_images},
        "samples": {"origin": fake.origin, "num_images": fake.num_images},
    }
    settings = dict(
        name=extractor.name,
        classifies_labels=extractor.classifies_dataset_labels,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        pr_k=pr_k,
        is_split_size=is_split_size,
        seed=seed,
    )
    for metric in which:
        entry = METRIC_FUNCTIONS[metric](ref, fake, **settings)
        result.update(entry if metric == "precision_recall" else {metric: entry})
    return result


def format_report(result: dict) -> str:
    """Human-readable lines: one per metric, 'unavailable (reason)' where it could not be made."""
    lines = [
        f"features: {result['extractor']}",
        f"reference: {result['reference']['origin']}",
        f"samples: {result['samples']['origin']}",
    ]
    labels = {"fid": "FID", "sfid": "sFID", "inception_score": "IS", "kid": "KID"}
    labels.update(precision="precision", recall="recall", class_accuracy="class accuracy")
    for key, label in labels.items():
        entry = result.get(key)
        if entry is None:
            continue
        if "unavailable" in entry:
            lines.append(f"{label}: unavailable ({entry['unavailable']})")
        elif key == "class_accuracy" and "reference_value" in entry:
            lines.append(
                f"{label}: {entry['value']:.4f} (reference {entry['reference_value']:.4f})"
            )
        elif "std" in entry:
            lines.append(f"{label}: {entry['value']:.6g} +- {entry['std']:.3g}")
        else:
            lines.append(f"{label}: {entry['value']:.4f}")
    return "\n".join(lines)
