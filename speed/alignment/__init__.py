"""Representation alignment of a backbone during training (REPA), with frozen encoders loaded
from local files. `build_alignment` makes it from the config's `repa` node."""

from __future__ import annotations

import torch
from torch import nn

from speed.alignment.repa import NoAlignment, RepresentationAlignment, as_tokens


@torch.no_grad()
def block_width(model: nn.Module, block: str, example: tuple) -> int:
    """The token width D of `model.get_submodule(block)`'s output, by one forward pass."""
    seen = []
    handle = model.get_submodule(block).register_forward_hook(
        lambda m, i, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        model(*example)
    finally:
        handle.remove()
    return int(as_tokens(seen[0]).shape[-1])


def build_alignment(
    lam: float = 0.0,
    block: str | None = None,
    projector_dim: int = 2048,
    encoder: nn.Module | None = None,
    *,
    model: nn.Module,
    example: tuple,
) -> nn.Module:
    """REPA for `model`, or `NoAlignment` when lam = 0.

    Args:
        lam: REPA's loss weight (0 = off; REPA uses 0.5).
        block: the aligned block's module path, e.g. "blocks.7" (DiT / SiT: after block 8).
        projector_dim: the projector's hidden width.
        encoder: the frozen encoder (built from the node's `encoder` subnode).
        model, example: the backbone and one example input (x, t, y) to size the projector.
    """
    if lam == 0:
        return NoAlignment()
    if lam < 0:
        raise ValueError(f"repa.lam must be >= 0, got {lam}")
    if encoder is None or block is None:
        raise ValueError("repa.lam > 0 needs repa.block and repa.encoder")
    if hasattr(model, "training_inputs"):  # MaskDiT, MDT: speed.models.masking
        raise ValueError(
            f"repa: {type(model).__name__} trains on a subset of its tokens and REPA aligns the "
            "full grid, which is not built; use a DiT or UNet backbone, or set repa.lam=0"
        )
    try:
        model.get_submodule(block)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise ValueError(
            f"repa.block: the model has no module {block!r} (top level: {names})"
        ) from None
    hidden = block_width(model, block, example)
    return RepresentationAlignment(model, encoder, block, hidden, lam, projector_dim)


__all__ = ["NoAlignment", "RepresentationAlignment", "build_alignment"]
