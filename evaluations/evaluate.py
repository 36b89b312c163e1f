"""Metrics between a reference set and a sample set: features -> statistics -> metric formulas.

`compute_metrics(reference, samples, extractor)` returns a JSON-ready dict with one entry per
metric: `{"value": float, "extractor": name, ...settings}` or, when the inputs cannot give that
metric, `{"value": None, "unavailable": reason}` (never a number from the wrong network).

The metrics are the registry `METRICS`: a new metric is one function of (reference statistics,
sample statistics, extractor) whose keyword-only parameters are its settings, plus one `Metric`
line with its report label; `compute_metrics`, `format_report` and the `evaluations.evaluator`
command line read the registry.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evaluations import metrics
from evaluations.features import FeatureExtractor, InceptionV3Features, extract_features
from evaluations.image_io import ImageSource
from evaluations.pair_alignment import PairFeatures, alignment_report
from evaluations.reference import FeatureStats
from speed.errors import ConfigError

FEATURE_KINDS = ("inception", "domain", "pairs")


def build_extractor(
    kind: str = "inception", inception_path=None, domain_path=None
) -> FeatureExtractor:
    """`inception`: InceptionV3Features(inception_path); `domain`: DomainFeatures(domain_path);
    `pairs`: PairFeatures(domain_path), the domain classifier on each half of a two-animal image
    (the text demo's)."""
    if kind == "inception":
        return InceptionV3Features(inception_path)
    if kind == "domain":
        from evaluations.domain_classifier import DomainFeatures

        return DomainFeatures(domain_path)
    if kind == "pairs":
        return PairFeatures(domain_path)
    raise ConfigError(f"unknown feature extractor {kind!r}; choose one of {FEATURE_KINDS}")


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
    shared: bool = False,
) -> FeatureStats:
    """Statistics of an image set (extracting features), or a loaded statistics file (checked).

    Statistics stored beside images (ADM reference batches) replace the computed FID/sFID
    statistics when they match the extractor; KID and precision/recall use the images' features.
    shared: every process of a torch.distributed group calls this and extracts a share
    (`extract_features`).
    """
    if isinstance(source, FeatureStats):
        reason = stats_mismatch(source, extractor)
        if reason is not None:
            raise ConfigError(f"{reason}; recompute them with `evaluations.evaluator --save-ref`")
        return source
    activations = extract_features(extractor, source.images, batch_size, device, progress, shared)
    origin = f"computed from {len(source)} images in {source.path}"
    stats = FeatureStats.from_activations(
        activations, extractor.name, origin, source.labels, source.prompts
    )
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


# ---- the metrics: fn(ref, fake, extractor, *, settings...) -> entry ----


def _fid(ref: FeatureStats, fake: FeatureStats, extractor: FeatureExtractor) -> dict:
    return {
        "value": metrics.frechet_distance(fake.mu, fake.sigma, ref.mu, ref.sigma),
        "extractor": extractor.name,
    }


def _sfid(ref: FeatureStats, fake: FeatureStats, extractor: FeatureExtractor) -> dict:
    if fake.mu_s is None and ref.mu_s is None:
        return _unavailable(
            "feature extractor has no spatial features; sFID uses Inception mixed_6/conv"
        )
    if fake.mu_s is None or ref.mu_s is None:
        return _unavailable("reference or sample statistics hold no spatial statistics (mu_s)")
    value = metrics.frechet_distance(fake.mu_s, fake.sigma_s, ref.mu_s, ref.sigma_s)
    return {"value": value, "extractor": extractor.name}


IS_PROTOCOLS = {
    "torch-fidelity": "10 splits after a shuffle by `seed` (torch-fidelity's default)",
    "adm": "contiguous splits of 5000 images, no shuffle (ADM's evaluator, as in DiT's tables)",
}
ADM_SPLIT_SIZE = 5000  # images per IS split in ADM's evaluator


def _inception_score(
    ref,
    fake: FeatureStats,
    extractor,
    *,
    is_protocol: str = "torch-fidelity",
    seed: int = metrics.TORCH_FIDELITY_SEED,
) -> dict:
    if is_protocol not in IS_PROTOCOLS:
        raise ConfigError(
            f"unknown is_protocol {is_protocol!r}; choose one of {list(IS_PROTOCOLS)}"
        )
    if fake.logits is None:
        return _unavailable("feature extractor has no logits")
    if is_protocol == "adm":
        splits = min(len(fake.logits), math.ceil(len(fake.logits) / ADM_SPLIT_SIZE))
        mean, std = metrics.inception_score(fake.logits, splits, shuffle=False)
    else:
        splits = 10
        if len(fake.logits) < splits:
            return _unavailable(f"torch-fidelity's IS needs at least {splits} images")
        mean, std = metrics.inception_score(fake.logits, splits, shuffle=True, seed=seed)
    return {
        "value": mean,
        "std": std,
        "splits": splits,
        "protocol": is_protocol,
        "extractor": extractor.name,
    }


def _kid(
    ref,
    fake,
    extractor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = metrics.TORCH_FIDELITY_SEED,
) -> dict:
    if ref.features is None or fake.features is None:
        return _unavailable("statistics file holds no features (save with --save-ref-features)")
    size = min(kid_subset_size, len(ref.features), len(fake.features))
    if size < 2:
        return _unavailable("KID needs at least 2 images on each side")
    mean, std = metrics.kernel_inception_distance(
        fake.features, ref.features, kid_subsets, size, seed
    )
    return {
        "value": mean,
        "std": std,
        "subset_size": size,
        "num_subsets": kid_subsets,
        "extractor": extractor.name,
    }


def _precision_recall(ref, fake, extractor, *, pr_k: int = 3) -> dict:
    """Two entries at once: {"precision": ..., "recall": ...}."""
    if ref.features is None or fake.features is None:
        reason = "statistics file holds no features (save with --save-ref-features)"
        return {"precision": _unavailable(reason), "recall": _unavailable(reason)}
    if min(len(ref.features), len(fake.features)) <= pr_k:
        reason = f"needs more than k={pr_k} images on each side"
        return {"precision": _unavailable(reason), "recall": _unavailable(reason)}
    precision, recall = metrics.precision_recall(ref.features, fake.features, pr_k)
    return {
        "precision": {"value": precision, "k": pr_k, "extractor": extractor.name},
        "recall": {"value": recall, "k": pr_k, "extractor": extractor.name},
    }


def _class_accuracy(ref, fake, extractor) -> dict:
    if not extractor.classifies_dataset_labels:
        return _unavailable("feature extractor does not classify the dataset's labels")
    if fake.labels is None or fake.logits is None:
        return _unavailable("samples carry no labels (arr_1)")
    result = {
        "value": metrics.class_accuracy(fake.logits, fake.labels),
        "extractor": extractor.name,
    }
    if ref.labels is not None and ref.logits is not None:
        result["reference_value"] = metrics.class_accuracy(ref.logits, ref.labels)
    return result


PAIR_PARTS = {
    "pair_accuracy": "pair accuracy",
    "half_accuracy": "half accuracy",
    "held_out_pair_accuracy": "held-out pair accuracy",
    "held_out_half_accuracy": "held-out half accuracy",
    "swapped": "swapped",
}


def _pair_alignment(ref, fake: FeatureStats, extractor) -> dict:
    """Five entries at once (`PAIR_PARTS`): how often both halves show the prompt's animals
    (pair accuracy, chance 0.01), how often one half does (the mean of the left and the right
    half's accuracy, chance 0.1), each also over the held-out pairs alone, and how often the
    prompt's two animals stand on the wrong sides."""
    reason = None
    if not isinstance(extractor, PairFeatures):
        reason = "needs the pairs features (the domain classifier on each half)"
    elif fake.prompts is None:
        reason = "samples carry no prompts (an inference .npz of a text model stores them)"
    if reason is not None:
        return {key: _unavailable(reason) for key in PAIR_PARTS}
    left, right = extractor.predictions(fake.logits)
    report = alignment_report(left, right, fake.prompts)

    for scores in report.values():
        scores["half_accuracy"] = (scores["left_accuracy"] + scores["right_accuracy"]) / 2

    def entry(split: str, key: str) -> dict:
        if split not in report:
            return _unavailable(f"no prompt names a {split.replace('_', '-')} pair")
        scores = report[split]
        return {"value": scores[key], "count": scores["count"], "extractor": extractor.name}

    return {
        "pair_accuracy": entry("all", "pair_accuracy"),
        "half_accuracy": entry("all", "half_accuracy"),
        "held_out_pair_accuracy": entry("held_out", "pair_accuracy"),
        "held_out_half_accuracy": entry("held_out", "half_accuracy"),
        "swapped": entry("all", "swapped"),
    }


# ---- the registry ----


@dataclass(frozen=True)
class Metric:
    """One entry of `METRICS`.

    fn: fn(ref, fake, extractor, **settings) -> entry (a dict with "value"), or {part: entry}
        when `parts` is given. Its keyword-only parameters are its settings, with their defaults
        (`compute_metrics` keywords, `evaluations.evaluator` options).
    label: name in reports.
    parts: result key -> label, for a metric giving several entries (precision and recall).
    help: meaning (and unit) of each setting, for the command line.
    by_default: scored when no metrics are named (`ALL_METRICS`); a metric of one dataset's
        samples only (the text demo's pair alignment) is scored only when asked for.
    """

    fn: Callable[..., dict]
    label: str
    parts: dict[str, str] | None = None
    help: dict[str, str] = field(default_factory=dict)
    by_default: bool = True

    @property
    def settings(self) -> dict[str, Any]:
        """{setting: default} of the keyword-only parameters of `fn`."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def labels(self, name: str) -> dict[str, str]:
        """Result key -> report label of the entries this metric gives."""
        return self.parts or {name: self.label}


# A new metric: one function above and one line here (report order is this order).
METRICS: dict[str, Metric] = {
    "fid": Metric(_fid, "FID"),
    "sfid": Metric(_sfid, "sFID"),
    "inception_score": Metric(
        _inception_score,
        "IS",
        help={
            "is_protocol": "IS splits: " + "; ".join(f"{k}: {v}" for k, v in IS_PROTOCOLS.items()),
            "seed": "torch-fidelity's rng_seed: KID subset draws and the IS shuffle",
        },
    ),
    "kid": Metric(
        _kid,
        "KID",
        help={
            "kid_subsets": "KID random subset pairs",
            "kid_subset_size": "KID images per subset (capped at the set sizes)",
            "seed": "torch-fidelity's rng_seed: KID subset draws and the IS shuffle",
        },
    ),
    "precision_recall": Metric(
        _precision_recall,
        "precision/recall",
        parts={"precision": "precision", "recall": "recall"},
        help={"pr_k": "precision/recall: k-th neighbour radius"},
    ),
    "class_accuracy": Metric(_class_accuracy, "class accuracy"),
    "pair_alignment": Metric(_pair_alignment, "pair alignment", PAIR_PARTS, by_default=False),
}
ALL_METRICS = tuple(name for name, metric in METRICS.items() if metric.by_default)


def metric_settings() -> dict[str, tuple[Any, str]]:
    """{setting: (default, help)} over every metric (a setting shared by two has one default)."""
    return {
        name: (default, metric.help.get(name, ""))
        for metric in METRICS.values()
        for name, default in metric.settings.items()
    }


def compute_metrics(
    reference: ImageSource | FeatureStats,
    samples: ImageSource | FeatureStats,
    extractor: FeatureExtractor,
    which: tuple[str, ...] = ALL_METRICS,
    batch_size: int = 50,
    device=None,
    progress: bool = True,
    shared: bool = False,
    **settings,
) -> dict:
    """Metrics of `samples` against `reference`; see the module docstring for the entries.

    settings: metric settings (`metric_settings()`: is_protocol, seed, kid_subsets,
    kid_subset_size, pr_k), each given to the metrics that declare it; others keep their defaults.
    shared: every process of a torch.distributed group calls this with the same inputs and
    extracts a share of the features; every process gets the same result.
    """
    unknown = set(which) - set(METRICS)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; choose from {tuple(METRICS)}")
    known = metric_settings()
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown metric setting {key!r}{hint}")
    ref = source_stats(reference, extractor, batch_size, device, progress, shared)
    fake = source_stats(samples, extractor, batch_size, device, progress, shared)
    result = {
        "extractor": extractor.name,
        "reference": {"origin": ref.origin, "num_images": ref.num_images},
        "samples": {"origin": fake.origin, "num_images": fake.num_images},
    }
    for name in which:
        metric = METRICS[name]
        own = {key: value for key, value in settings.items() if key in metric.settings}
        entry = metric.fn(ref, fake, extractor, **own)
        result.update(entry if metric.parts else {name: entry})
    return result


def format_report(result: dict) -> str:
    """Human-readable lines: one per metric, 'unavailable (reason)' where it could not be made."""
    lines = [
        f"features: {result['extractor']}",
        f"reference: {result['reference']['origin']}",
        f"samples: {result['samples']['origin']}",
    ]
    for name, metric in METRICS.items():
        for key, label in metric.labels(name).items():
            entry = result.get(key)
            if entry is not None:
                lines.append(f"{label}: {_format_entry(entry)}")
    return "\n".join(lines)


def _format_entry(entry: dict) -> str:
    if "unavailable" in entry:
        return f"unavailable ({entry['unavailable']})"
    if "reference_value" in entry:
        return f"{entry['value']:.4f} (reference {entry['reference_value']:.4f})"
    if "std" in entry:
        return f"{entry['value']:.6g} +- {entry['std']:.3g}"
    return f"{entry['value']:.4f}"
