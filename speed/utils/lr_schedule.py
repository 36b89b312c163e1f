"""Learning-rate multipliers over training steps (wrapped in torch's LambdaLR)."""

from __future__ import annotations

import math

import torch

LR_SCHEDULES = ("constant", "warmup", "cosine", "linear_anneal")


def lr_multiplier(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Factor applied to the base lr at optimizer step `step`.

    constant: 1. warmup: linear 0 -> 1 over `warmup_steps`, then 1. cosine: warmup then half a
    cosine to 0 at `total_steps`. linear_anneal: warmup then linear to 0 at `total_steps`
    (guided-diffusion's lr_anneal_steps).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: unknown '{schedule}'; use one of {', '.join(LR_SCHEDULES)}")
    if warmup_steps > 0 and step < warmup_steps and schedule != "constant":
        return (step + 1) / warmup_steps
    if schedule in ("constant", "warmup"):
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def build_lr_scheduler(optimizer, schedule: str, warmup_steps: int, total_steps: int):
    """LambdaLR applying `lr_multiplier`; validates the schedule name up front."""
    lr_multiplier(0, schedule, warmup_steps, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, schedule, warmup_steps, total_steps)
    )
