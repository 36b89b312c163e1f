"""Random token masking for masked diffusion transformers (MaskDiT, MDT), after MAE (He et al.).

A mask is drawn per sample by sorting uniform noise over the L patch tokens: the `num_keep` tokens
with the smallest noise stay visible, the rest are masked. The noise is an input (drawn by the
training loop from its per-step generator, see `mask_inputs`), so a mask is a pure function of
(seed, step, sample index): reproducible, different on every rank and step, and the same whatever
the number of processes.

Shapes: tokens [N, L, D]; `ids_keep` [N, num_keep] (indices of the visible tokens, in shuffled
order); `ids_restore` [N, L] (the inverse permutation); a token mask [N, L] is 1 where masked.
"""

from __future__ import annotations

import torch


def mask_ratio_keep(num_tokens: int, mask_ratio: float) -> int:
    """Visible tokens at `mask_ratio` (MAE's int(L (1 - r))); at least one must stay."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    num_keep = int(num_tokens * (1.0 - mask_ratio))
    if num_keep < 1:
        raise ValueError(
            f"mask_ratio {mask_ratio} keeps no token of {num_tokens}; lower mask_ratio"
        )
    return num_keep


def mask_inputs(
    num_tokens: int, num_keep: int, batch_size: int, generator: torch.Generator
) -> dict[str, torch.Tensor | int]:
    """The forward kwargs of a masked training step: per-sample noise [batch_size, L] from
    `generator` and the visible count, or {} when nothing would be masked."""
    if num_keep >= num_tokens:
        return {}
    return {
        "mask_noise": torch.rand(batch_size, num_tokens, generator=generator),
        "num_keep": num_keep,
    }


def shuffle(mask_noise: torch.Tensor, num_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids_keep [N, num_keep], ids_restore [N, L]) from noise [N, L]: ascending noise first."""
    ids_shuffle = torch.argsort(mask_noise, dim=1)
    return ids_shuffle[:, :num_keep], torch.argsort(ids_shuffle, dim=1)


def token_mask(ids_restore: torch.Tensor, num_keep: int) -> torch.Tensor:
    """[N, L] float mask, 1 where masked: a token is visible iff its rank is below num_keep."""
    return (ids_restore >= num_keep).float()


def keep_tokens(x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """The visible tokens: x [N, L, D] -> [N, num_keep, D] (in shuffled order)."""
    return torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def restore_tokens(
    x: torch.Tensor, ids_restore: torch.Tensor, mask_token: torch.Tensor
) -> torch.Tensor:
    """Visible tokens [N, K, D] (shuffled order) plus the mask token [1, 1, D] in every masked
    place -> the full sequence [N, L, D] in the original order."""
    n, kept, dim = x.shape
    fill = mask_token.to(x.dtype).expand(n, ids_restore.shape[1] - kept, dim)
    full = torch.cat([x, fill], dim=1)
    return torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))


def pixel_mask(mask: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Token mask [N, L] (row-major over `grid`) -> pixel mask [N, 1, H, W]."""
    n = mask.shape[0]
    pixels = mask.reshape(n, 1, *grid)
    return pixels.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, L, p * p * C], the token order and layout `unpatchify` inverts."""
    n, c, h, w = x.shape
    p = patch_size
    x = x.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


def mae_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """MaskDiT's reconstruction loss on masked patches, per sample [N].

    Each patch of `target` [N, C, H, W] is normalised by its own mean and (unbiased) variance
    (MAE's norm_pix_loss, eps 1e-6); the squared error to `prediction` [N, C, H, W] is averaged
    within a patch and then over the masked patches (`mask` [N, L], 1 = masked).
    """
    target = patchify(target, patch_size)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((patchify(prediction, patch_size) - target) ** 2).mean(dim=-1)  # [N, L]
    return (per_patch * mask).sum(dim=1) / mask.sum(dim=1)
