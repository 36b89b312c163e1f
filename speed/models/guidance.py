"""Classifier-free guidance (Ho & Salimans 2022) shared by every backbone.

Training drops labels to the null label `num_classes` with probability `class_dropout_prob`, so one
network learns both eps(x, t, y) and eps(x, t, null). Sampling mixes them (eq. 6):
eps = eps_uncond + s * (eps_cond - eps_uncond).

Batch convention (DiT's `forward_with_cfg`): the caller doubles the batch as [cond half; uncond
half], with the uncond half's labels set to the null label. The model runs on the first half of `x`
twice, mixes the guided channels and gives both halves the guided result; channels not guided (a
learned variance, or DiT's fourth latent channel) pass through from the model output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def guided_channel_count(cfg_channels: int | str, in_channels: int) -> int:
    """Number of leading output channels that guidance mixes.

    `cfg_channels` is an int (DiT's convention is 3: it guides 3 of the 4 latent channels, which
    reproduces the paper's numbers exactly) or "all" (all `in_channels`, the standard form). Never
    more than `in_channels`, so a learned variance is never mixed.
    """
    if cfg_channels == "all":
        return in_channels
    if isinstance(cfg_channels, bool) or not isinstance(cfg_channels, int) or cfg_channels < 1:
        raise ValueError(f"cfg_channels must be a positive int or 'all', got {cfg_channels!r}")
    return min(cfg_channels, in_channels)


def drop_labels(
    labels: torch.Tensor,
    null_label: int,
    prob: float,
    force_drop_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Replace labels by `null_label`: where `force_drop_ids == 1`, else each with probability
    `prob` (drawn from the global RNG on the labels' device).

    Args:
        labels: class indices [N].
    Returns:
        labels [N] with the dropped entries set to `null_label`.
    """
    if force_drop_ids is None:
        drop = torch.rand(labels.shape[0], device=labels.device) < prob
    else:
        drop = force_drop_ids.to(labels.device) == 1
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def forward_with_cfg(
    forward: Callable[..., torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    cfg_scale: float,
    guided_channels: int,
    **kwargs,
) -> torch.Tensor:
    """Guided model output for a [cond; uncond] batch.

    Args:
        forward: the model's forward(x, t, y) -> [N, C_out, H, W].
        x: [N, C, H, W], N even; only the first half is used (the caller repeats the noise).
        t: timesteps [N].
        y: labels [N]: the classes, then the null label for the second half.
        cfg_scale: guidance scale s (1 gives the conditional output on the guided channels).
        guided_channels: leading output channels to mix (see `guided_channel_count`).
        kwargs: the model's other inputs, N rows each (e.g. a super-resolution model's
            `low_res`), the same for both halves.
    Returns:
        [N, C_out, H, W]: both halves hold eps_uncond + s (eps_cond - eps_uncond) on the guided
        channels and the model's own output on the others.
    """
    n = x.shape[0]
    if n % 2:
        raise ValueError(f"forward_with_cfg needs an even batch [cond; uncond], got {n} rows")
    half = x[: n // 2]
    out = forward(torch.cat([half, half], dim=0), t, y, **kwargs)
    eps, rest = out[:, :guided_channels], out[:, guided_channels:]
    cond, uncond = eps[: n // 2], eps[n // 2 :]  # slices, not chunk: export keeps N symbolic
    guided = uncond + cfg_scale * (cond - uncond)
    return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)


def guided_condition(model, condition) -> dict:
    """The model kwargs of a [cond; uncond] batch: labels [N] then the null label
    `model.num_classes`, or (a caption condition {"y": [N, L, ...], "mask": [N, L]}) the captions
    twice with `force_drop_ids` 0 then 1 (the null caption). Returns tensors of 2N rows."""
    if not isinstance(condition, Mapping):
        return {"y": torch.cat([condition, torch.full_like(condition, model.num_classes)])}
    n = condition["y"].shape[0]
    drop = torch.cat([torch.zeros(n), torch.ones(n)]).long().to(condition["y"].device)
    doubled = {key: torch.cat([value, value]) for key, value in condition.items()}
    return {**doubled, "force_drop_ids": drop}
