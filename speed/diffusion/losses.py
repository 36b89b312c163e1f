"""Likelihood terms of the variational bound: Gaussian KL and the discretised decoder likelihood.

All functions work elementwise on tensors (any shape, broadcasting) and return nats; callers divide
by log(2) for bits. References: Ho et al. 2020, sec. 3.3 (discrete decoder L_0);
Nichol & Dhariwal 2021 (improved DDPM), eq. 4-6 (the VLB terms).
"""

from __future__ import annotations

import math

import torch

_LOG_EPS = 1e-12  # floor of probabilities before the log (keeps log finite)


def mean_flat(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: [N, ...] -> [N]."""
    return tensor.mean(dim=list(range(1, tensor.ndim)))


def masked_mean_flat(tensor: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first of the elements where `weight` (0/1, broadcast to
    `tensor`, e.g. [N, 1, H, W] against [N, C, H, W]) is 1: [N, ...] -> [N]."""
    weight = weight.to(tensor.dtype).expand_as(tensor)
    dims = list(range(1, tensor.ndim))
    return (tensor * weight).sum(dim=dims) / weight.sum(dim=dims)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats.

    KL = 0.5 * (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2)).
    Arguments broadcast; scalars are allowed as long as one argument is a tensor.
    """
    ref = next((a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor)), None)
    if ref is None:
        raise TypeError("normal_kl needs at least one tensor argument")
    logvar1, logvar2 = (
        v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=ref.dtype, device=ref.device)
        for v in (logvar1, logvar2)
    )
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Fast approximation of the standard normal CDF (Page 1977):
    Phi(x) ~ 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, *, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Log-likelihood of 8-bit data under a Gaussian discretised into 256 bins (Ho et al., eq. 13).

    Args:
        x: targets rescaled from uint8 {0..255} to [-1, 1]; bin edges lie at x +- 1/255.
        means, log_scales: the Gaussian's mean and log standard deviation (same shape as x).
    Returns:
        log P(bin of x) per element, in nats; the outer bins extend to -inf and +inf, so the
        probabilities of the 256 bins sum to one.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            f"x, means and log_scales must share one shape, got {tuple(x.shape)}, "
            f"{tuple(means.shape)}, {tuple(log_scales.shape)}"
        )
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=_LOG_EPS))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=_LOG_EPS))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=_LOG_EPS))
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, log_delta),
    )
