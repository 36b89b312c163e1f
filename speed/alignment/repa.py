"""REPA: representation alignment (Yu et al. 2024, "Representation Alignment for Generation:
Training Diffusion Transformers Is Easier Than You Think"; sihyun-yu/REPA).

During training, the hidden tokens h [N, L, D] after one block of the backbone are mapped by a
projector (3 linear layers with SiLU: D -> projector_dim -> projector_dim -> encoder dim) to
h~ and pulled toward a frozen encoder's patch features z [N, L, D_e] of the clean image:
    L_REPA = lam * mean over tokens of -cos(h~_l, z_l)        (REPA's eq. 8, lam = 0.5)
added per sample to the objective's loss. Token grids of different sizes are matched by
resizing the projected grid to the encoder's (bilinear; REPA's own settings match them 16 x 16).
The projector trains with the model and is saved in the checkpoint; sampling never uses it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speed.utils import fsdp
from speed.utils.distributed import all_reduce_sum


def build_projector(hidden: int, projector_dim: int, z_dim: int) -> nn.Sequential:
    """REPA's projector: Linear(hidden, p) - SiLU - Linear(p, p) - SiLU - Linear(p, z_dim)."""
    return nn.Sequential(
        nn.Linear(hidden, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, projector_dim),
        nn.SiLU(),
        nn.Linear(projector_dim, z_dim),
    )


def negative_cosine(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over tokens of -cos(projected_l, target_l): [N, L, D] x2 -> [N]."""
    p = F.normalize(projected.float(), dim=-1)
    z = F.normalize(target.float(), dim=-1)
    return -(p * z).sum(dim=-1).mean(dim=-1)


def as_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """A block's output as tokens [N, L, D]: transformer tokens as they are, a feature map
    [N, C, H, W] (the UNet's) flattened to [N, H W, C]."""
    return hidden.flatten(2).transpose(1, 2) if hidden.ndim == 4 else hidden


def match_grid(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Tokens [N, L, D] of a square grid resized (bilinear) to a square grid of `length`."""
    if tokens.shape[1] == length:
        return tokens
    side, target = math.isqrt(tokens.shape[1]), math.isqrt(length)
    if side * side != tokens.shape[1] or target * target != length:
        raise ValueError(
            f"cannot match {tokens.shape[1]} model tokens to {length} encoder tokens: "
            "both must be square grids"
        )
    grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
    grid = F.interpolate(grid, size=(target, target), mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class NoAlignment(nn.Module):
    """REPA off (lam = 0): no targets, no loss, no parameters."""

    lam = 0.0

    def targets(self, images: torch.Tensor) -> None:
        return None

    def loss(self, targets) -> float:
        return 0.0

    def sync_gradients(self) -> None:
        pass

    def shard(self, param_dtype) -> None:
        pass

    def describe(self) -> str:
        return "off"


class RepresentationAlignment(nn.Module):
    """The projector (a trainable module: its state is checkpointed) plus the frozen encoder and
    a forward hook that keeps the output of `model.get_submodule(block)`.

    Args:
        model: the backbone being trained (the hook is registered on it).
        encoder: a frozen encoder (`speed.alignment.encoders`), kept outside this module's state.
        block: the module path of the aligned block, e.g. "blocks.7" (REPA: depth 8 of SiT-XL).
        hidden: the block's output width D.
        lam: the loss weight (REPA's proj_coeff, 0.5).
        projector_dim: the projector's hidden width (REPA's 2048).
    """

    def __init__(self, model, encoder, block: str, hidden: int, lam: float, projector_dim: int):
        super().__init__()
        self.projector = build_projector(hidden, projector_dim, encoder.feature_dim)
        self.lam, self.block = float(lam), block
        self._encoder = [encoder]  # a list: not a submodule, so not saved nor trained
        self._hidden: torch.Tensor | None = None
        model.get_submodule(block).register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._hidden = output[0] if isinstance(output, tuple) else output

    @property
    def encoder(self):
        return self._encoder[0]

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's patch features [N, L, D_e] of clean images [N, C, H, W] in [-1, 1]."""
        return self.encoder(images)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """lam * per-sample negative cosine similarity [N] of the tokens the last forward pass
        kept, projected, against `targets`."""
        if self._hidden is None:
            raise RuntimeError(f"block {self.block!r} did not run in the last forward pass")
        projected = self.projector(as_tokens(self._hidden))
        self._hidden = None
        return self.lam * negative_cosine(match_grid(projected, targets.shape[1]), targets)

    def shard(self, param_dtype: torch.dtype | None) -> None:
        """Shard the projector like the model under strategy=fsdp (one unit; gathered in
        `param_dtype` for compute); its gradients are then reduced by the sharding."""
        fsdp.shard(self.projector, param_dtype)

    def sync_gradients(self) -> None:
        """Average the projector's gradients over ranks (it is not inside DDP's wrapper; a
        sharded projector's are reduced by FSDP already)."""
        if torch.distributed.is_initialized() and not fsdp.is_sharded(self.projector):
            world = torch.distributed.get_world_size()
            for p in self.projector.parameters():
                if p.grad is not None:
                    all_reduce_sum(p.grad).div_(world)

    def describe(self) -> str:
        return f"REPA lam={self.lam:g} at {self.block} -> {self.encoder.name}"
