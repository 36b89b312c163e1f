"""DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, ICCV 2023).

Same modules, state-dict keys, initialisation and numerics as the official `models.py`, so the
official checkpoints load unchanged. Additions: attention through `scaled_dot_product_attention`,
per-block gradient checkpointing, unconditional mode (`num_classes=0`), non-square inputs, and
guidance of either DiT's 3 channels or all channels. Label dropout, the null label, guidance and
checkpointing come from `speed.models.conditional.ConditionalBackbone`, shared with the UNet.
"""

from __future__ import annotations

import functools

import torch
from timm.models.vision_transformer import Mlp, PatchEmbed
from torch import nn

from speed.models import transformer_parts as parts
from speed.models.layers import attention, timestep_embedding

# Paper sizes: name -> (depth, hidden_size, num_heads); each comes with patch sizes 2, 4, 8.
DIT_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
PATCH_SIZES = (2, 4, 8)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [N, T, D] * (1 + scale [N, D]) + shift [N, D]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """t [N] -> 256-d sinusoid -> Linear-SiLU-Linear -> [N, hidden_size]."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels [N] -> [N, hidden_size] (the official module, so its state-dict key stays).

    The table has num_classes rows plus, when `dropout_prob > 0`, the null label `num_classes`.
    Label dropout itself is `ConditionalBackbone.labels`, applied by the DiT before the lookup.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class Attention(nn.Module):
    """Multi-head self-attention with timm's parameter layout (`qkv`, `proj`).

    `fused` picks `scaled_dot_product_attention` (default) or the written-out softmax.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, heads, T, dim / heads]
        x = attention(q, k, v, fused=self.fused)
        return self.proj(x.transpose(1, 2).reshape(n, tokens, dim))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (DiT Fig. 3); `cond_size` is the width of
    the conditioning vector c (default `hidden_size`; MaskDiT's narrower decoder differs)."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, cond_size: int | None = None
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        tanh_gelu = functools.partial(nn.GELU, approximate="tanh")
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=tanh_gelu, drop=0)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(cond_size or hidden_size, 6 * hidden_size)
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [N, T, D], c [N, cond_size] -> [N, T, D]."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm then Linear to patch_size^2 * out_channels per token
    (`cond_size`: width of c, default `hidden_size`)."""

    def __init__(
        self, hidden_size: int, patch_size: int, out_channels: int, cond_size: int | None = None
    ):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(cond_size or hidden_size, 2 * hidden_size)
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def init_dit_weights(model: nn.Module, blocks) -> None:
    """DiT's initialisation of a DiT-shaped `model` (`x_embedder`, `pos_embed`, `t_embedder`,
    `y_embedder` or None, `final_layer`): Xavier-uniform linears and patch projection, sin-cos
    positions, N(0, 0.02) label table and timestep MLP, and adaLN-Zero: the modulation of each of
    `blocks` and of the final layer, and the output layer, start at zero."""
    parts.xavier_linears(model)
    parts.fill_sincos(model.pos_embed, model.grid_size)
    parts.init_patch_embed(model.x_embedder)
    if model.y_embedder is not None:
        nn.init.normal_(model.y_embedder.embedding_table.weight, std=0.02)
    parts.init_timestep_embedder(model.t_embedder)
    parts.zero_layers(
        *(block.adaLN_modulation[-1] for block in blocks),
        model.final_layer.adaLN_modulation[-1],
        model.final_layer.linear,
    )


class DiT(parts.PatchBackbone):
    """Diffusion transformer over patches of a [N, in_channels, H, W] input.

    Args:
        input_size: input side H = W, or (H, W); each divisible by `patch_size`.
        patch_size: side of the square patches (tokens = H W / patch_size^2).
        in_channels: input channels (4 for SD-VAE latents, 1-3 in pixel space).
        hidden_size, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP width ratio.
        class_dropout_prob: label dropout for classifier-free guidance (adds the null label row).
        num_classes: classes; 0 = unconditional (no label table, `y` ignored).
        learn_sigma: also output the variance interpolation (2 * in_channels output channels).
        grad_checkpointing: recompute each block in the backward pass (training only).
        cfg_channels: leading channels mixed by `forward_with_cfg`: 3 (DiT's convention) or "all".
    """

    shard_unit_types = (DiTBlock,)
    input_name = "DiT"
    # Layers LoRA adapts by default (speed.adapters): every block's attention and MLP linears.
    adapter_targets = r".*blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])"

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
    ):
        height, width = parts.patch_grid_size(input_size, patch_size, hidden_size, num_heads)
        if in_channels < 1 or num_classes < 0:
            raise ValueError(
                f"need in_channels >= 1, num_classes >= 0; got {in_channels}, {num_classes}"
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
        self.num_heads = num_heads

        self.x_embedder = PatchEmbed(
            (height, width), patch_size, in_channels, hidden_size, bias=True
        )
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = (
            LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes else None
        )
        # Fixed sin-cos table, stored as a frozen parameter like the official model.
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_tokens, hidden_size), requires_grad=False
        )
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform linears (and patch projection), N(0, 0.02) embeddings, sin-cos
        positions, and adaLN-Zero: every modulation and the output layer start at zero."""
        init_dit_weights(self, self.blocks)

    def _condition(
        self, t: torch.Tensor, y: torch.Tensor | None, force_drop_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """Conditioning vector c = t_emb + y_emb [N, D]; y None means the null label."""
        c = self.t_embedder(t)
        labels = self.labels(y, t, force_drop_ids)
        return c if labels is None else c + self.y_embedder(labels)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ):
        """x [N, C, H, W], timesteps t [N], labels y [N] (ignored if unconditional)
        -> [N, out_channels, H, W]. `force_drop_ids` [N] (1 = use the null label) replaces the
        random label dropout of training, so the caller controls it."""
        self._check_input(x)
        x = self.x_embedder(x) + self.pos_embed  # [N, T, D], T = H W / p^2
        c = self._condition(t, y, force_drop_ids)  # [N, D]
        for block in self.blocks:
            x = self.run_block(block, x, c)  # [N, T, D]
        x = self.final_layer(x, c)  # [N, T, p * p * out_channels]
        return self.unpatchify(x)  # [N, out_channels, H, W]


def size_registry(cls, family: str, describe: str) -> dict:
    """`{family}-{size}/{patch}` -> a constructor of `cls` at that DiT paper size, for every size
    of `DIT_SIZES` and patch of `PATCH_SIZES`; `describe` formats each one's docstring from
    `family`, `size`, `patch`, `depth`, `hidden` and `heads`."""

    def sized(size: str, patch: int):
        depth, hidden, heads = DIT_SIZES[size]

        def build(**kwargs):
            return cls(depth=depth, hidden_size=hidden, patch_size=patch, num_heads=heads, **kwargs)

        build.__name__ = build.__qualname__ = f"{family}_{size}_{patch}"
        build.__doc__ = describe.format(
            family=family, size=size, patch=patch, depth=depth, hidden=hidden, heads=heads
        )
        return build

    return {f"{family}-{s}/{p}": sized(s, p) for s in DIT_SIZES for p in PATCH_SIZES}


def paper_size(
    registry: dict, family: str, *, name: str, patch_size, depth, hidden_size, num_heads, **others
) -> dict:
    """The constructor arguments of a builder's call: the size arguments of the registered `name`
    (e.g. "DiT-XL/2"), each one given (not None) overriding the paper's, and `others` as given.
    A builder passes its arguments whole: `DiT(**paper_size(DiT_models, "DiT", **locals()))`."""
    if name not in registry:
        raise ValueError(f"unknown {family} model name {name!r}; choose one of {sorted(registry)}")
    size, patch = name[len(family) + 1 :].split("/")
    default_depth, default_hidden, default_heads = DIT_SIZES[size]
    return {
        **others,
        "patch_size": int(patch) if patch_size is None else patch_size,
        "hidden_size": default_hidden if hidden_size is None else hidden_size,
        "depth": default_depth if depth is None else depth,
        "num_heads": default_heads if num_heads is None else num_heads,
    }


DiT_models = size_registry(
    DiT, "DiT", "{family}-{size}/{patch}: depth {depth}, hidden {hidden}, heads {heads}."
)
DiT_XL_2, DiT_XL_4, DiT_XL_8 = (DiT_models[f"DiT-XL/{p}"] for p in PATCH_SIZES)
DiT_L_2, DiT_L_4, DiT_L_8 = (DiT_models[f"DiT-L/{p}"] for p in PATCH_SIZES)
DiT_B_2, DiT_B_4, DiT_B_8 = (DiT_models[f"DiT-B/{p}"] for p in PATCH_SIZES)
DiT_S_2, DiT_S_4, DiT_S_8 = (DiT_models[f"DiT-S/{p}"] for p in PATCH_SIZES)


def build_dit(
    name: str = "DiT-S/2",
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
) -> DiT:
    """A DiT of a paper size by name (e.g. "DiT-XL/2"); any size argument given overrides it.

    Config-friendly: `model: {_target_: speed.models.dit.build_dit, name: DiT-S/4, depth: 6}`.
    """
    return DiT(**paper_size(DiT_models, "DiT", **locals()))
