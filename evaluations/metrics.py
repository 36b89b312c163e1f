"""Sample-quality metrics as pure functions of feature arrays (numpy, float64, no I/O).

Every function takes features already extracted by a network (see `evaluations.features`). FID,
KID, the Inception Score and precision/recall are computed by torch-fidelity's own functions (the
field's reference port of the TF metrics), so the numbers are torch-fidelity's:
- FID: Heusel et al. 2017, "GANs trained by a two time-scale update rule ...", eq. 6.
- KID: Binkowski et al. 2018, "Demystifying MMD GANs", unbiased MMD^2 with a cubic kernel.
- Precision / recall: Kynkaanniemi et al. 2019, "Improved precision and recall metric ...".
- Inception Score: Salimans et al. 2016, "Improved techniques for training GANs".
Paired image metrics (super-resolution) by torchmetrics, one value per image pair:
- PSNR: 10 log10(data_range^2 / MSE), in dB.
- SSIM: Wang et al. 2004, "Image quality assessment: from error visibility to structural
  similarity", 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import (
    KEY_METRIC_ISC_MEAN,
    KEY_METRIC_ISC_STD,
    isc_features_to_metric,
)
from torch_fidelity.metric_kid import (
    KEY_METRIC_KID_MEAN,
    KEY_METRIC_KID_STD,
    kid_features_to_metric,
)
from torch_fidelity.metric_prc import (
    KEY_METRIC_PRECISION,
    KEY_METRIC_RECALL,
    prc_features_to_metric,
)
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from speed.errors import DataError

TORCH_FIDELITY_SEED = 2020  # torch-fidelity's rng_seed: KID subsets and the IS shuffle


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
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), by torch-fidelity:
    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), the trace of the root
    being the sum of the square roots of the eigenvalues of sigma1 sigma2 (TTUR's formula).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise DataError(
            f"statistics differ in size: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape} (made by different feature extractors?)"
        )
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if np.diagonal(sigma).min() < 0 or not np.allclose(sigma, sigma.T):
            raise DataError(
                f"FID: {name} is not a covariance matrix (negative variance or not symmetric); "
                "pass the statistics of feature_statistics"
            )
    stats = ({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2})
    return fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]


def _features_pair(features1, features2, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    f1, f2 = (torch.as_tensor(np.asarray(f, np.float64)) for f in (features1, features2))
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise DataError(
            f"{what} needs features [N1, D] and [N2, D], got {tuple(f1.shape)}, {tuple(f2.shape)}"
        )
    return f1, f2


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,  # random subset pairs averaged over
    subset_size: int = 1000,  # images per subset, drawn without replacement from each set
    seed: int = TORCH_FIDELITY_SEED,  # np.random.RandomState seed of the subset draws
) -> tuple[float, float]:
    """KID by torch-fidelity: mean and standard deviation of the unbiased MMD^2 with the kernel
    k(x, y) = (x . y / d + 1)^3 over `num_subsets` pairs of random subsets; for each pair a
    subset of features1 [N1, D], then one of features2 [N2, D], is drawn from RandomState(seed).
    """
    f1, f2 = _features_pair(features1, features2, "KID")
    if not 2 <= subset_size <= min(len(f1), len(f2)):
        raise DataError(
            f"KID subset_size={subset_size} must lie in [2, min(N1, N2) = {min(len(f1), len(f2))}]"
        )
    if num_subsets < 1:
        raise DataError(f"KID num_subsets must be >= 1, got {num_subsets}")
    out = kid_features_to_metric(
        f1, f2, kid_subsets=num_subsets, kid_subset_size=subset_size, rng_seed=seed, verbose=False
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) from features [N, D], by
    torch-fidelity.

    Each set's manifold is the union of balls around its points with radius = distance to the
    k-th nearest other point. Precision = fraction of fake points inside the real manifold (<=);
    recall = fraction of real points inside the fake manifold. Distances go in row batches.
    """
    fake_t, real_t = _features_pair(fake, real, "precision/recall")
    if not 1 <= k < min(len(real_t), len(fake_t)):
        raise DataError(
            f"precision/recall needs 1 <= k < N, got k={k}, N={len(real_t)}, {len(fake_t)}"
        )
    out = prc_features_to_metric(
        fake_t,
        real_t,
        prc_neighborhood=k,
        prc_batch_size=batch_size,
        save_cpu_ram=True,  # distances in [batch_size, N] blocks, not [N, N]
        verbose=False,
    )
    return out[KEY_METRIC_PRECISION], out[KEY_METRIC_RECALL]


def inception_score(
    logits: np.ndarray, splits: int = 10, shuffle: bool = True, seed: int = TORCH_FIDELITY_SEED
) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) from logits [N, C], by torch-fidelity: mean and
    std over `splits` splits, split i holding rows [i N / splits, (i + 1) N / splits) after a
    permutation by RandomState(seed) when `shuffle` (torch-fidelity's default, 10 splits);
    shuffle=False with N / 5000 splits is ADM's evaluator.
    """
    logits = torch.as_tensor(np.asarray(logits, np.float64))
    if logits.ndim != 2 or not 1 <= splits <= len(logits):
        raise DataError(
            f"IS needs logits [N, C] with 1 <= splits <= N, got {tuple(logits.shape)}, {splits}"
        )
    out = isc_features_to_metric(logits, splits=splits, shuffle=shuffle, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax class over logits [N, C] equals the requested label [N]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise DataError(
            f"class accuracy needs logits [N, C] and labels [N], got {logits.shape}, {labels.shape}"
        )
    return float((logits.argmax(axis=1) == labels).mean())


def edge_iou(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Intersection over union of boolean edge maps, per image: |P and T| / |P or T| for maps
    [N, H, W] (1 where both maps are empty). How closely a ControlNet's samples follow their
    control edges (Zhang et al. 2023 score edge control this way on their maps)."""
    predicted, target = np.asarray(predicted, bool), np.asarray(target, bool)
    if predicted.shape != target.shape or predicted.ndim != 3:
        raise DataError(
            f"edge IoU needs two maps [N, H, W] of one shape, got {predicted.shape}, {target.shape}"
        )
    inter = (predicted & target).sum(axis=(1, 2))
    union = (predicted | target).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _image_pairs(images: np.ndarray, references: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (or float) [N, H, W, C] pairs -> float64 [N, C, H, W] tensors, same shapes checked."""
    a, b = (torch.as_tensor(np.asarray(x, np.float64)) for x in (images, references))
    if a.shape != b.shape or a.ndim != 4 or not len(a):
        raise DataError(
            f"paired metrics need images and references of one shape [N, H, W, C], got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)


def psnr(images: np.ndarray, references: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """PSNR in dB of each image [N, H, W, C] against its reference (inf where they are equal)."""
    a, b = _image_pairs(images, references)
    values = peak_signal_noise_ratio(a, b, data_range=data_range, reduction="none", dim=(1, 2, 3))
    return values.numpy()


def ssim(images: np.ndarray, references: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM of each image [N, H, W, C] against its reference (1 where they are equal); the
    mean SSIM map over the valid (unpadded) positions and the channels. Sides >= 11 pixels."""
    a, b = _image_pairs(images, references)
    if min(a.shape[-2:]) < 11:
        raise DataError(f"SSIM's 11x11 window needs sides >= 11, got {tuple(a.shape[-2:])}")
    values = structural_similarity_index_measure(a, b, data_range=data_range, reduction="none")
    return values.numpy()
