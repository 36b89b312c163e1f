"""What DiT and the transformers built like it (MaskDiT, MDT, PixArt-alpha) share around their
blocks, written once: the patch grid of a [N, C, H, W] input and its inverse (`PatchBackbone`),
and the pieces of DiT's initialisation (Peebles & Xie 2023, `initialize_weights` of the official
`models.py`): Xavier-uniform linears, the fixed 2-D sin-cos position table, the patch projection
initialised as a Linear, N(0, 0.02) timestep MLP, and zeroed layers (adaLN-Zero, output layer).

Each initialiser draws from the global RNG in module order, so a backbone that calls them in its
own order keeps its seeded initial weights.
"""

from __future__ import annotations

import torch
from torch import nn

from speed.models.conditional import ConditionalBackbone
from speed.models.layers import sincos_pos_embed_2d


def patch_grid_size(
    input_size: int | tuple[int, int], patch_size: int, hidden_size: int, num_heads: int
) -> tuple[int, int]:
    """(H, W) of `input_size` (a side, or a pair), checked: each side divisible by `patch_size`
    and `hidden_size` by `num_heads`."""
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    if height % patch_size or width % patch_size:
        raise ValueError(f"input_size {height}x{width} is not divisible by patch_size {patch_size}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    return height, width


class PatchBackbone(ConditionalBackbone):
    """A `ConditionalBackbone` over the patch tokens of a [N, in_channels, H, W] input.

    Args: `input_size` (H, W), `patch_size`, `in_channels` and `learn_sigma` (2 * in_channels
    output channels) as DiT's; the rest are `ConditionalBackbone`'s. Sets `input_size`,
    `patch_size`, `grid_size` (H / p, W / p), `num_tokens` (H W / p^2), `in_channels`,
    `learn_sigma`, `out_channels`.
    """

    input_name = "PatchBackbone"  # how input shape errors name the model

    def __init__(
        self,
        *,
        input_size: tuple[int, int],
        patch_size: int,
        in_channels: int,
        learn_sigma: bool,
        **conditional,
    ):
        super().__init__(in_channels=in_channels, **conditional)
        height, width = input_size
        self.input_size = (height, width)
        self.patch_size = patch_size
        self.grid_size = (height // patch_size, width // patch_size)
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.in_channels = in_channels
        self.learn_sigma = learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, p * p * C] tokens -> [N, C, H, W] image."""
        p, c = self.patch_size, self.out_channels
        h, w = self.grid_size
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def _check_input(self, x: torch.Tensor) -> None:
        """A clear error unless x is [N, in_channels, H, W] of this model's input size."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"{self.input_name} expects input [N, {self.in_channels}, {self.input_size[0]}, "
                f"{self.input_size[1]}], got {list(x.shape)}; set in_channels / input_size"
            )


def xavier_linears(*modules: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear in `modules`, in module order."""
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)


def fill_sincos(pos_embed: nn.Parameter, grid_size: tuple[int, int]) -> None:
    """Copy the fixed 2-D sin-cos table into `pos_embed` [1, h * w, D]."""
    table = sincos_pos_embed_2d(pos_embed.shape[-1], *grid_size)
    pos_embed.data.copy_(torch.from_numpy(table).float().unsqueeze(0))


def init_patch_embed(x_embedder: nn.Module) -> None:
    """Xavier-uniform patch projection, as if it were a Linear (DiT's)."""
    weight = x_embedder.proj.weight.data
    nn.init.xavier_uniform_(weight.view([weight.shape[0], -1]))


def init_timestep_embedder(t_embedder: nn.Module) -> None:
    """N(0, 0.02) weights of the timestep MLP's two Linears."""
    nn.init.normal_(t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(t_embedder.mlp[2].weight, std=0.02)


def zero_layers(*layers: nn.Module) -> None:
    """Zero weight and bias of each layer (adaLN-Zero modulations, output layers)."""
    for layer in layers:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
