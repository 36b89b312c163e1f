"""MDT: Masked Diffusion Transformer is a Strong Image Synthesizer (Gao et al. 2023), v2 layout.

The network of sail-sg/MDT's `MDTv2`: an encoder of two halves joined by long skips (the second
half's blocks concatenate the matching first-half output and project it back, `skip_linear`), a
side-interpolater (one block) and a decoder whose blocks each take the embedded input tokens as a
skip; every attention adds a learned relative position bias (BEiT's table). Of `depth` blocks,
`decode_layer` form the decoder and the rest split evenly into the two encoder halves.

Mask latent modelling: in training the encoder sees a random subset of the tokens (mask ratio 0.3
plus a uniform jitter of up to `mask_ratio_jitter`, MDTv2's [0.3, 0.5)); the side-interpolater puts
a learned mask token in every masked place, runs one block over the full set and keeps its output
only at the masked places. Each training step takes two passes over the same noisy input, one
masked and one unmasked, whose denoising losses add up (Gao et al. sec. 3.3). Sampling, inference
and export run the unmasked pass only.

Differences from the released code: both passes are one forward call and share x_t's noise (the
released trainer calls the diffusion twice, each drawing its own noise), so DDP and FSDP see one
forward per backward; the mask jitter is drawn once per optimizer step from the training loop's
per-step generator; unconditional models are supported; guidance is the shared
`forward_with_cfg` (the released sampler's power-cosine scale schedule is not reproduced); the
loss weights are the configured timestep weighting (MDTv2 hard-codes Min-SNR-5).
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import PatchEmbed
from torch import nn

from speed.models import masking
from speed.models import transformer_parts as parts
from speed.models.dit import (
    DiT,
    DiTBlock,
    FinalLayer,
    LabelEmbedder,
    TimestepEmbedder,
    init_dit_weights,
    modulate,
    paper_size,
    size_registry,
)
from speed.models.layers import attention


class RelativePositionBias(nn.Module):
    """A learned bias per head for every 2-D offset between two tokens of a grid (BEiT).

    `relative_position_bias_table` [(2h-1)(2w-1) + 3, heads] (3 unused rows kept for the
    released checkpoints' shape); `relative_position_index` [L, L] picks the row of each pair.
    """

    def __init__(self, grid: tuple[int, int], num_heads: int):
        super().__init__()
        h, w = grid
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * h - 1) * (2 * w - 1) + 3, num_heads)
        )
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        coords = torch.stack([rows.flatten(), cols.flatten()])  # [2, L]
        offsets = coords[:, :, None] - coords[:, None, :]  # [2, L, L]
        index = (offsets[0] + h - 1) * (2 * w - 1) + (offsets[1] + w - 1)
        self.register_buffer("relative_position_index", index)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """[heads, L, L], or with ids_keep [N, K] the bias among kept tokens [N, heads, K, K]."""
        index = self.relative_position_index
        if ids_keep is not None:
            index = index[ids_keep[:, :, None], ids_keep[:, None, :]]  # [N, K, K]
        bias = self.relative_position_bias_table[index]  # [..., K, K, heads]
        return bias.movedim(-1, -3)


class Attention(nn.Module):
    """Self-attention (timm's `qkv`, `proj`) plus a relative position bias."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_bias = RelativePositionBias(grid, num_heads)
        self.fused = True

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, T, D] (T = L, or K kept tokens listed by ids_keep [N, K]) -> [N, T, D]."""
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, heads, T, dim / heads]
        x = attention(q, k, v, fused=self.fused, bias=self.rel_pos_bias(ids_keep))
        return self.proj(x.transpose(1, 2).reshape(n, tokens, dim))


class MDTBlock(DiTBlock):
    """A DiT block (adaLN-Zero) with MDT's attention and, if `skip`, a long-skip input:
    x <- skip_linear([x, skip]) before the block."""

    def __init__(self, hidden_size, num_heads, mlp_ratio, grid, skip: bool = False):
        super().__init__(hidden_size, num_heads, mlp_ratio)
        self.attn = Attention(hidden_size, num_heads, grid)
        self.skip_linear = nn.Linear(2 * hidden_size, hidden_size) if skip else None

    def forward(self, x, c, skip=None, ids_keep=None):
        """x [N, T, D], c [N, D], skip [N, T, D] (with skip_linear), ids_keep [N, T] or None."""
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(
            modulate(self.norm1(x), shift_msa, scale_msa), ids_keep
        )
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class MDT(parts.PatchBackbone):
    """MDTv2 over patches of a [N, in_channels, H, W] input.

    Args: as DiT's (`speed.models.dit.DiT`), and
        decode_layer: decoder blocks (MDTv2-XL/2: 4); depth - decode_layer must be even.
        mask_ratio: base share of masked tokens in the masked pass (paper 0.3).
        mask_ratio_jitter: the step's ratio is mask_ratio + U[0, jitter) (MDTv2 0.2; 0 = fixed).
    """

    shard_unit_types = (MDTBlock,)
    input_name = "MDT"
    adapter_targets = DiT.adapter_targets  # LoRA's default layers: blocks' attention and MLP
    _condition = DiT._condition  # c = t_emb + y_emb [N, D]

    def __init__(
        self,
        input_size: int | tuple[int, int] = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        grad_checkpointing: bool = False,
        cfg_channels: int | str = 3,
        decode_layer: int = 4,
        mask_ratio: float = 0.3,
        mask_ratio_jitter: float = 0.2,
    ):
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        if height % patch_size or width % patch_size or hidden_size % num_heads:
            raise ValueError(
                f"input_size {height}x{width} must be divisible by patch_size {patch_size} and "
                f"hidden_size {hidden_size} by num_heads {num_heads}"
            )
        if not 0 <= decode_layer < depth or (depth - decode_layer) % 2:
            raise ValueError(
                f"need 0 <= decode_layer < depth with depth - decode_layer even; got "
                f"decode_layer {decode_layer}, depth {depth}"
            )
        if mask_ratio_jitter < 0 or mask_ratio + mask_ratio_jitter > 1:
            raise ValueError(
                f"need mask_ratio_jitter >= 0 and mask_ratio + mask_ratio_jitter <= 1; got "
                f"{mask_ratio}, {mask_ratio_jitter}"
            )
        super().__init__(
            input_size=(height, width),
            patch_size=patch_size,
            in_channels=in_channels,
            learn_sigma=learn_sigma,
            num_classes=num_classes,
            class_dropout_prob=class_dropout_prob,
            cfg_channels=cfg_channels,
            grad_checkpointing=grad_checkpointing,
        )
        masking.mask_ratio_keep(self.num_tokens, mask_ratio)
        self.mask_ratio = mask_ratio
        self.mask_ratio_jitter = mask_ratio_jitter

        self.x_embedder = PatchEmbed(self.input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = (
            LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes else None
        )
        # Learned positions (MDT trains them), initialised to DiT's sin-cos table.
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, hidden_size))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        half = (depth - decode_layer) // 2

        def blocks(count, skip=False):
            return nn.ModuleList(
                [
                    MDTBlock(hidden_size, num_heads, mlp_ratio, self.grid_size, skip)
                    for _ in range(count)
                ]
            )

        self.en_inblocks = blocks(half)
        self.en_outblocks = blocks(half, skip=True)
        self.de_blocks = blocks(decode_layer, skip=True)
        self.sideblocks = blocks(1)
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation (Xavier linears, sin-cos positions, adaLN-Zero, zero output
        layer) for every block, and N(0, 0.02) for the mask token, as MDTv2 does."""
        init_dit_weights(self, self.shard_units())
        parts.fill_sincos(self.decoder_pos_embed, self.grid_size)
        nn.init.normal_(self.mask_token, std=0.02)

    def training_inputs(self, step: int, batch_size: int, generator: torch.Generator) -> dict:
        """The masked pass's kwargs for one step: per-sample noise and the step's visible count,
        at ratio mask_ratio + U[0, mask_ratio_jitter) drawn from `generator`."""
        jitter = float(torch.rand((), generator=generator)) * self.mask_ratio_jitter
        num_keep = masking.mask_ratio_keep(self.num_tokens, self.mask_ratio + jitter)
        return masking.mask_inputs(self.num_tokens, num_keep, batch_size, generator)

    def encode(self, tokens, c, ids_keep=None) -> torch.Tensor:
        """The encoder (two halves with long skips): embedded tokens [N, L, D], c [N, D] ->
        [N, L, D], or with ids_keep [N, K] only the kept tokens [N, K, D]."""
        x = tokens if ids_keep is None else masking.keep_tokens(tokens, ids_keep)
        skips = []
        for block in self.en_inblocks:
            x = self.run_block(block, x, c, None, ids_keep)
            skips.append(x)
        for block in self.en_outblocks:
            x = self.run_block(block, x, c, skips.pop(), ids_keep)
        return x

    def _pass(self, tokens, c, ids_keep=None, ids_restore=None, num_keep=None):
        """One pass from embedded tokens [N, L, D] to the output [N, out_channels, H, W];
        masked when ids_keep / ids_restore are given."""
        x = self.encode(tokens, c, ids_keep)
        if ids_restore is None:
            x = x + self.decoder_pos_embed
        else:  # side-interpolater: predict the masked tokens, keep the encoder's visible ones
            x = masking.restore_tokens(x, ids_restore, self.mask_token) + self.decoder_pos_embed
            side = x
            for block in self.sideblocks:
                side = self.run_block(block, side, c, None, None)
            masked = masking.token_mask(ids_restore, num_keep).unsqueeze(-1)  # [N, L, 1]
            x = masked * side + (1 - masked) * x
        for block in self.de_blocks:
            x = self.run_block(block, x, c, tokens, None)
        return self.unpatchify(self.final_layer(x, c))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
        mask_noise: torch.Tensor | None = None,
        num_keep: int | None = None,
    ):
        """x [N, C, H, W], t [N], y [N] -> [N, out_channels, H, W] (the unmasked pass).

        With `mask_noise` [N, L] and `num_keep` (from `training_inputs`) both training passes
        run on the same input: {"output": unmasked pass, "masked_output": masked pass}, the
        training output `GaussianDiffusion.training_losses` sums the losses of.
        """
        self._check_input(x)
        tokens = self.x_embedder(x) + self.pos_embed  # [N, L, D]
        c = self._condition(t, y, force_drop_ids)  # [N, D]
        out = self._pass(tokens, c)
        if mask_noise is None:
            if self.training and torch.is_grad_enabled():  # every parameter gets a gradient
                out = out + 0.0 * (self.mask_token.sum() + _sum(self.sideblocks.parameters()))
            return out
        ids_keep, ids_restore = masking.shuffle(mask_noise.to(x.device), num_keep)
        masked = self._pass(tokens, c, ids_keep, ids_restore, num_keep)
        return {"output": out, "masked_output": masked}


def _sum(parameters) -> torch.Tensor:
    return sum(p.sum() for p in parameters)


MDT_models = size_registry(
    MDT, "MDT", "{family}-{size}/{patch}: DiT-{size}/{patch}'s depth, width and heads."
)


def build_mdt(
    name: str = "MDT-XL/2",
    input_size: int | tuple[int, int] = 32,
    in_channels: int = 4,
    num_classes: int = 1000,
    learn_sigma: bool = True,
    hidden_size: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    patch_size: int | None = None,
    mlp_ratio: float = 4.0,
    class_dropout_prob: float = 0.1,
    grad_checkpointing: bool = False,
    cfg_channels: int | str = 3,
    decode_layer: int = 4,
    mask_ratio: float = 0.3,
    mask_ratio_jitter: float = 0.2,
) -> MDT:
    """An MDT of a paper size by name (e.g. "MDT-XL/2"); a size argument given overrides it.
    The other arguments are `MDT`'s.

    Config-friendly: `model: {_target_: speed.models.mdt.build_mdt, name: MDT-S/2}`.
    """
    return MDT(**paper_size(MDT_models, "MDT", **locals()))
