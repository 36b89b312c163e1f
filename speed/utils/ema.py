"""Exponential moving averages of model weights, kept in float32 (Polyak averaging). An EMA of a
sharded model (`speed.utils.fsdp`) is sharded the same way and updated on the local shards."""

from __future__ import annotations

import copy

import torch
from torch import nn

from speed.utils.fsdp import local


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen float32 copy of `model` in eval mode, to be updated with `update_ema`."""
    ema = copy.deepcopy(model).float().eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter, for the parameters the
    model trains (a frozen one, e.g. a base under an adapter, stays what it was); buffers are
    copied. A sharded EMA and model (same sharding) update each rank's shards, with no
    communication."""
    pairs = [(e, p) for e, p in zip(ema.parameters(), model.parameters()) if p.requires_grad]
    ema_params = [local(e) for e, _ in pairs]
    model_params = [local(p).detach().float() for _, p in pairs]
    torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        local(ema_buffer).copy_(local(buffer))
