"""Sample-quality metrics as pure functions of feature arrays (numpy, float64, no I/O).

Every function takes features already extracted by a network (see `evaluations.features`):
- FID: Heusel et al. 2017, "GANs trained by a two time-scale update rule ...", eq. 6.
- KID: Binkowski et al. 2018, "Demystifying MMD GANs", unbiased MMD^2 with a cubic kernel.
- Precision / recall: Kynkaanniemi et al. 2019, "Improved precision and recall metric ...".
- Inception Score: Salimans et al. 2016, "Improved techniques for training GANs".
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import rel_entr

from speed.errors import DataError


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (divided by N - 1) of features [N, D], in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise DataError(f"need features of shape [N >= 2, D], got {features.shape}")
    n, dim = features.shape
    if n < dim:
        warnings.warn(
            f"FID statistics from {n} images of {dim}-d features: the covariance has rank < "
            f"{dim}, so the score is far from the true FID; use at least {dim} images "
            "(50000 is the standard)",
            stacklevel=2,
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)). The trace of the square
    root is taken from symmetric eigendecompositions: sigma1 sigma2 has the eigenvalues of the
    positive semi-definite sigma1^(1/2) sigma2 sigma1^(1/2), so tr (sigma1 sigma2)^(1/2) is the sum
    of their square roots. Equal to TTUR's scipy.linalg.sqrtm route, 5x faster at D = 2048, and
    exact for the singular covariances of N < D samples (no diagonal offset needed).
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise DataError(
            f"statistics differ in size: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape} (made by different feature extractors?)"
        )
    diff = mu1 - mu2
    root1 = _psd_sqrt(sigma1, "sigma1")
    product = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(_nonnegative(product, "sigma1 sigma2")).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def _psd_sqrt(matrix: np.ndarray, name: str) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(_nonnegative(eigenvalues, name))) @ vectors.T


def _nonnegative(eigenvalues: np.ndarray, name: str) -> np.ndarray:
    """Eigenvalues of a positive semi-definite matrix with rounding noise clipped to 0; a clearly
    negative one means the input was not a covariance."""
    tolerance = 1e-6 * max(abs(eigenvalues).max(initial=0.0), 1e-300)
    if eigenvalues.min(initial=0.0) < -tolerance:
        raise DataError(
            f"FID: {name} has eigenvalue {eigenvalues.min():.3g} < 0: not covariance matrices "
            "(pass the statistics of feature_statistics)"
        )
    return np.clip(eigenvalues, 0.0, None)


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for rows of a [m, d] and b [n, d] -> [m, n]."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size sets x, y [m, d] (Binkowski et al. 2018, eq. 2)."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    off_diag = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off_diag - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,  # random subset pairs averaged over
    subset_size: int = 1000,  # images per subset, drawn without replacement from each set
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over random subset pairs.

    features1 [N1, D], features2 [N2, D]; subset_size must not exceed min(N1, N2).
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise DataError(f"KID needs features [N1, D] and [N2, D], got {f1.shape} and {f2.shape}")
    if not 2 <= subset_size <= min(len(f1), len(f2)):
        raise DataError(
            f"KID subset_size={subset_size} must lie in [2, min(N1, N2) = {min(len(f1), len(f2))}]"
        )
    if num_subsets < 1:
        raise DataError(f"KID num_subsets must be >= 1, got {num_subsets}")
    rng = np.random.default_rng(0) if rng is None else rng
    values = [
        _mmd2_unbiased(
            f1[rng.choice(len(f1), subset_size, replace=False)],
            f2[rng.choice(len(f2), subset_size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between rows of a [m, d] and b [n, d] -> [m, n], clipped at 0."""
    d = (a * a).sum(1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


def knn_radii(features: np.ndarray, k: int = 3, batch_size: int = 1024) -> np.ndarray:
    """Squared distance from each row of features [N, D] to its k-th nearest other row -> [N].

    The point itself (distance 0) is neighbour 0, so k = 3 is the third nearest other point.
    """
    f = np.asarray(features, np.float64)
    if not 1 <= k < len(f):
        raise DataError(f"k-NN radius needs 1 <= k < N, got k={k}, N={len(f)}")
    radii = np.empty(len(f))
    for start in range(0, len(f), batch_size):
        d = _squared_distances(f[start : start + batch_size], f)
        radii[start : start + batch_size] = np.partition(d, k, axis=1)[:, k]
    return radii


def _fraction_in_manifold(
    manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, batch_size: int
) -> float:
    """Fraction of query rows within radius (<=) of at least one manifold row."""
    inside = np.zeros(len(queries), dtype=bool)
    for start in range(0, len(queries), batch_size):
        d = _squared_distances(queries[start : start + batch_size], manifold)
        inside[start : start + batch_size] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) from features [N, D].

    Each set's manifold is the union of balls around its points with radius = distance to the
    k-th nearest neighbour. Precision = fraction of fake points inside the real manifold;
    recall = fraction of real points inside the fake manifold. Distances go in row batches.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise DataError(
            f"precision/recall needs [N1, D] and [N2, D], got {real.shape}, {fake.shape}"
        )
    precision = _fraction_in_manifold(real, knn_radii(real, k, batch_size), fake, batch_size)
    recall = _fraction_in_manifold(fake, knn_radii(fake, k, batch_size), real, batch_size)
    return precision, recall


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [N, C] in float64."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def inception_score(
    scores: np.ndarray, splits: int = 10, from_logits: bool = False
) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))): mean and std over `splits` contiguous splits.

    scores: class probabilities p(y|x) [N, C] (rows sum to 1), or logits with from_logits=True.
    Split i holds rows [i N / splits, (i + 1) N / splits) (improved-gan); ADM's evaluator uses
    splits of 5000 images, i.e. splits = N / 5000. Zero probabilities contribute 0 (0 log 0 = 0).
    """
    p = softmax(scores) if from_logits else np.asarray(scores, np.float64)
    if p.ndim != 2 or not 1 <= splits <= len(p):
        raise DataError(
            f"IS needs probabilities [N, C] with 1 <= splits <= N, got {p.shape}, {splits}"
        )
    if not from_logits and (p.min() < 0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3)):
        raise DataError("IS got rows that are not probabilities; pass logits with from_logits=True")
    values = []
    for i in range(splits):
        part = p[i * len(p) // splits : (i + 1) * len(p) // splits]
        kl = rel_entr(part, part.mean(axis=0, keepdims=True)).sum(axis=1).mean()
        values.append(np.exp(kl))
    return float(np.mean(values)), float(np.std(values))


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax class over logits [N, C] equals the requested label [N]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise DataError(
            f"class accuracy needs logits [N, C] and labels [N], got {logits.shape}, {labels.shape}"
        )
    return float((logits.argmax(axis=1) == labels).mean())
