"""MaskDiT: Fast Training of Diffusion Models with Masked Transformers (Zheng et al. 2023).

A DiT whose encoder (the DiT blocks) sees only the visible patch tokens in training; a light
decoder (a projection to its width, a learned mask token in every masked place, a few DiT blocks)
restores the full token set before the final layer. The training loss is the denoising loss on the
visible tokens plus `mae_loss_coef` times an MAE-style reconstruction of the masked patches of the
noisy input (Zheng et al. eq. 4-5; `speed.models.masking.mae_loss`). From `unmask_at_step` on the
mask ratio is 0: the paper's final stage of unmasked fine-tuning. Sampling, inference and export
always run unmasked.

Unlike the paper (EDM's sigma parameterisation and lognormal sigmas), this model trains under the
repository's Gaussian diffusion: the output is DiT's eps (and optionally the variance), so it
compares with the DiT baseline and takes every timestep sampler and loss weighting, SpeeD included.
The MAE target is the normalised noisy input x_t, regressed by the eps channels on masked patches.

State-dict keys follow Anima-Lab/MaskDiT's `models/maskdit.py` (`decoder_layer`, `mask_token`,
`decoder_pos_embed`, `decoder_blocks.{i}`, `final_layer`), except the label table, which keeps
DiT's `nn.Embedding` with a null row (MaskDiT embeds one-hot labels with a Linear).
"""

from __future__ import annotations

import torch
from torch import nn

from speed.models import masking
from speed.models import transformer_parts as parts
from speed.models.dit import DiT, DiTBlock, FinalLayer, paper_size, size_registry


class DecoderLayer(FinalLayer):
    """adaLN-modulated LayerNorm of the encoder tokens, then Linear to the decoder width: DiT's
    final layer with one decoder_hidden_size-wide "pixel" per token. x [N, T, D], c [N, D] ->
    [N, T, decoder_hidden_size] (the LayerNorm holds no weights, so the keys stay MaskDiT's)."""

    def __init__(self, hidden_size: int, decoder_hidden_size: int):
        super().__init__(hidden_size, 1, decoder_hidden_size)


class MaskDiT(DiT):
    """DiT encoder on the visible tokens + a light decoder on all tokens (MaskDiT, Fig. 2).

    Args: DiT's (see `speed.models.dit.DiT`), and
        mask_ratio: share of patch tokens masked in training (paper 0.5); 0 trains unmasked.
        mae_loss_coef: weight of the reconstruction loss on masked patches (paper 0.1).
        unmask_at_step: from this optimizer step on, train unmasked (the paper's final
            fine-tuning stage); None = never.
        decoder_hidden_size, decoder_depth, decoder_num_heads: the decoder (paper 512, 8, 16).
    """

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
        mask_ratio: float = 0.5,
        mae_loss_coef: float = 0.1,
        unmask_at_step: int | None = None,
        decoder_hidden_size: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
    ):
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_channels=in_channels,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            class_dropout_prob=class_dropout_prob,
            num_classes=num_classes,
            learn_sigma=learn_sigma,
            grad_checkpointing=grad_checkpointing,
            cfg_channels=cfg_channels,
        )
        if mae_loss_coef < 0 or (unmask_at_step is not None and unmask_at_step < 0):
            raise ValueError(
                f"need mae_loss_coef >= 0 and unmask_at_step >= 0 (or None); got "
                f"{mae_loss_coef}, {unmask_at_step}"
            )
        if decoder_hidden_size % decoder_num_heads or decoder_depth < 0:
            raise ValueError(
                f"decoder_hidden_size {decoder_hidden_size} must be divisible by "
                f"decoder_num_heads {decoder_num_heads}, decoder_depth >= 0 (got {decoder_depth})"
            )
        self.num_keep = masking.mask_ratio_keep(self.num_tokens, mask_ratio)
        self.mask_ratio = mask_ratio
        self.mae_loss_coef = mae_loss_coef
        self.unmask_at_step = unmask_at_step

        self.decoder_layer = DecoderLayer(hidden_size, decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_hidden_size))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, self.num_tokens, decoder_hidden_size), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [
                DiTBlock(decoder_hidden_size, decoder_num_heads, mlp_ratio, cond_size=hidden_size)
                for _ in range(decoder_depth)
            ]
        )
        self.final_layer = FinalLayer(
            decoder_hidden_size, self.patch_size, self.out_channels, cond_size=hidden_size
        )
        self._initialize_decoder()

    def _initialize_decoder(self) -> None:
        """As the encoder: Xavier linears, sin-cos positions, adaLN-Zero; the decoder projection
        and the output layer start at zero, the mask token at N(0, 0.02) (as MaskDiT does)."""
        parts.xavier_linears(self.decoder_layer, self.decoder_blocks, self.final_layer)
        parts.fill_sincos(self.decoder_pos_embed, self.grid_size)
        nn.init.normal_(self.mask_token, std=0.02)
        parts.zero_layers(
            *(block.adaLN_modulation[-1] for block in self.decoder_blocks),
            self.decoder_layer.adaLN_modulation[-1],
            self.decoder_layer.linear,
            self.final_layer.adaLN_modulation[-1],
            self.final_layer.linear,
        )

    def mask_ratio_at(self, step: int) -> float:
        """The training mask ratio at optimizer step `step` (0 from `unmask_at_step` on)."""
        if self.unmask_at_step is not None and step >= self.unmask_at_step:
            return 0.0
        return self.mask_ratio

    def training_inputs(self, step: int, batch_size: int, generator: torch.Generator) -> dict:
        """Forward kwargs of training step `step` for `batch_size` samples: the mask noise and
        visible count while masking, {} in the unmasked stage (see `speed.models.masking`)."""
        num_keep = masking.mask_ratio_keep(self.num_tokens, self.mask_ratio_at(step))
        return masking.mask_inputs(self.num_tokens, num_keep, batch_size, generator)

    def encode(
        self, x: torch.Tensor, c: torch.Tensor, ids_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Encoder tokens: x [N, C, H, W], c [N, D] -> [N, L, D], or with `ids_keep` [N, K] only
        the visible tokens [N, K, D] (in the order of `ids_keep`)."""
        tokens = self.x_embedder(x) + self.pos_embed  # [N, L, D]
        if ids_keep is not None:
            tokens = masking.keep_tokens(tokens, ids_keep)  # [N, K, D]
        for block in self.blocks:
            tokens = self.run_block(block, tokens, c)
        return tokens

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
        mask_noise: torch.Tensor | None = None,
        num_keep: int | None = None,
    ):
        """x [N, C, H, W], t [N], y [N] -> [N, out_channels, H, W] (all tokens, as in sampling).

        With `mask_noise` [N, L] and `num_keep` (from `training_inputs`) the encoder sees only
        num_keep tokens per sample and the result is a training output for
        `GaussianDiffusion.training_losses`: {"output": [N, out_channels, H, W], "visible":
        [N, 1, H, W] (1 on visible patches, where the denoising loss is taken), "losses":
        {"mae": mae_loss_coef x the reconstruction loss [N]}}.
        """
        self._check_input(x)
        c = self._condition(t, y, force_drop_ids)  # [N, D]
        ids_keep = ids_restore = None
        if mask_noise is not None:
            ids_keep, ids_restore = masking.shuffle(mask_noise.to(x.device), num_keep)
        h = self.decoder_layer(self.encode(x, c, ids_keep), c)  # [N, K or L, D_dec]
        if ids_restore is not None:
            h = masking.restore_tokens(h, ids_restore, self.mask_token)  # [N, L, D_dec]
        elif self.training and torch.is_grad_enabled():
            h = h + 0.0 * self.mask_token  # unmasked training: every parameter gets a gradient
        h = h + self.decoder_pos_embed
        for block in self.decoder_blocks:
            h = self.run_block(block, h, c)
        out = self.unpatchify(self.final_layer(h, c))  # [N, out_channels, H, W]
        if ids_restore is None:
            return out
        mask = masking.token_mask(ids_restore, num_keep)  # [N, L], 1 = masked
        mae = masking.mae_loss(out[:, : self.in_channels], x, mask, self.patch_size)
        visible = 1.0 - masking.pixel_mask(mask, self.grid_size, self.patch_size)
        return {"output": out, "visible": visible, "losses": {"mae": self.mae_loss_coef * mae}}


MaskDiT_models = size_registry(
    MaskDiT, "MaskDiT", "{family}-{size}/{patch}: DiT-{size}/{patch}'s encoder + decoder."
)


def build_maskdit(
    name: str = "MaskDiT-XL/2",
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
    mask_ratio: float = 0.5,
    mae_loss_coef: float = 0.1,
    unmask_at_step: int | None = None,
    decoder_hidden_size: int = 512,
    decoder_depth: int = 8,
    decoder_num_heads: int = 16,
) -> MaskDiT:
    """A MaskDiT of a paper size by name (e.g. "MaskDiT-XL/2": DiT-XL/2's encoder); a size
    argument given overrides it. The other arguments are `MaskDiT`'s.

    Config-friendly: `model: {_target_: speed.models.maskdit.build_maskdit, name: MaskDiT-S/4}`.
    """
    return MaskDiT(**paper_size(MaskDiT_models, "MaskDiT", **locals()))
