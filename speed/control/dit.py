"""The PixArt ControlNet (PixArt-delta, arXiv 2401.05252, Sec. 3) for a DiT: trainable copies of
the base's first N blocks; the control image is patch-embedded by the base's own `x_embedder`,
enters the first copy through a zero-initialised linear `before_proj` added to the base's hidden
state after block 0, and copy k's output enters the base before block k + 1 through a
zero-initialised linear `after_proj[k]`."""

from __future__ import annotations

import copy

import torch
from torch import nn

from speed.control.hooks import hooked


def zero_linear(width: int) -> nn.Linear:
    layer = nn.Linear(width, width)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class DiTControlBranch(nn.Module):
    """Copies of `base.blocks[:num_blocks]` (1 <= num_blocks < depth; PixArt-delta: 13 of 28)
    with their zero projections."""

    def __init__(self, base: nn.Module, num_blocks: int):
        super().__init__()
        depth = len(base.blocks)
        if not 1 <= num_blocks < depth:
            raise ValueError(f"num_blocks must lie in 1..{depth - 1}, got {num_blocks}")
        width = base.pos_embed.shape[-1]
        self.blocks = nn.ModuleList(copy.deepcopy(base.blocks[i]) for i in range(num_blocks))
        self.blocks.requires_grad_(True)
        self.before_proj = zero_linear(width)
        self.after_proj = nn.ModuleList(zero_linear(width) for _ in range(num_blocks))

    def attached(self, base, x, t, y, control: torch.Tensor, scale: float, **kwargs):
        """Hooks adding scale * after_proj[k](copy k) to the input of base block k + 1."""
        residuals: list[torch.Tensor] = []

        def add(k: int):
            def hook(module, args):
                if k == 0:  # the base's hidden state after block 0 and the conditioning c
                    residuals.extend(self.residuals(base, control, *args))
                return (args[0] + scale * residuals[k], *args[1:])

            return hook

        return hooked(
            *(base.blocks[k + 1].register_forward_pre_hook(add(k)) for k in range(len(self.blocks)))
        )

    def residuals(self, base, control, x, c) -> list[torch.Tensor]:
        """after_proj[k](h_k) for each copy k, h_0 = copy_0(x + before_proj(embed(control)), c)."""
        h = x + self.before_proj(base.x_embedder(control) + base.pos_embed)  # [N, T, D]
        out = []
        for block, proj in zip(self.blocks, self.after_proj):
            h = block(h, c)
            out.append(proj(h))
        return out
