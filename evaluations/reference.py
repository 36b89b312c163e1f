"""Feature statistics of an image set, and their `.npz` file format.

A statistics file holds `mu` [D], `sigma` [D, D] (FID), optionally `mu_s`, `sigma_s` (sFID's
spatial features), `features` [N, D] (for KID and precision/recall), `extractor` (the name of the
network that made them) and `num_images`. ADM's reference batches store `mu`, `sigma`, `mu_s`,
`sigma_s` beside their images (`arr_0`), without `extractor`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evaluations.metrics import feature_statistics
from speed.errors import DataError

if TYPE_CHECKING:
    from evaluations.features import Activations


@dataclass
class FeatureStats:
    """What the metrics need from one image set, computed or loaded from a file.

    extractor: name of the feature network (None for files from other tools, e.g. ADM's).
    origin: one line saying where the numbers come from, for reports.
    logits [N, C], labels [N] and prompts (text-to-image samples) exist only when computed from
    images.
    """

    mu: np.ndarray
    sigma: np.ndarray
    extractor: str | None
    origin: str
    num_images: int | None = None
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None
    features: np.ndarray | None = None
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    prompts: list[str] | None = None

    @classmethod
    def from_activations(
        cls,
        activations: Activations,
        extractor: str,
        origin: str,
        labels: np.ndarray | None = None,
        prompts: list[str] | None = None,
    ) -> FeatureStats:
        """Statistics of extracted activations (features, spatial, logits); labels [N] and
        prompts if known."""
        mu, sigma = feature_statistics(activations.features)
        mu_s = sigma_s = None
        if activations.spatial is not None:
            mu_s, sigma_s = feature_statistics(activations.spatial)
        return cls(
            mu=mu,
            sigma=sigma,
            extractor=extractor,
            origin=origin,
            num_images=len(activations.features),
            mu_s=mu_s,
            sigma_s=sigma_s,
            features=activations.features,
            logits=activations.logits,
            labels=labels,
            prompts=prompts,
        )

    def save(self, path: str | os.PathLike, with_features: bool = False) -> Path:
        """Write an `.npz` readable by `load_stats_npz` (features as float32 when kept)."""
        arrays = {"mu": self.mu, "sigma": self.sigma}
        if self.mu_s is not None:
            arrays.update(mu_s=self.mu_s, sigma_s=self.sigma_s)
        if with_features:
            if self.features is None:
                raise DataError("these statistics hold no features to save")
            arrays["features"] = self.features.astype(np.float32)
        if self.extractor is not None:
            arrays["extractor"] = np.array(self.extractor)
        if self.num_images is not None:
            arrays["num_images"] = np.array(self.num_images)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # an open file keeps numpy from appending ".npz"
            np.savez(f, **arrays)
        return path


def stats_from_npz(data, path: str | os.PathLike) -> FeatureStats:
    """FeatureStats from an opened `.npz` (np.load result) that has `mu` and `sigma`."""
    if "sigma" not in data:
        raise DataError(f"{path}: has 'mu' but no 'sigma'; a statistics file needs both")

    def optional(key):
        return np.asarray(data[key], np.float64) if key in data else None

    num = int(data["num_images"]) if "num_images" in data else None
    return FeatureStats(
        mu=np.asarray(data["mu"], np.float64),
        sigma=np.asarray(data["sigma"], np.float64),
        extractor=str(data["extractor"]) if "extractor" in data else None,
        origin=f"precomputed statistics in {path}",
        num_images=num,
        mu_s=optional("mu_s"),
        sigma_s=optional("sigma_s"),
        features=optional("features"),
    )
