"""PixArt-alpha's caption-conditioned DiT (Chen et al. 2023, "PixArt-alpha: Fast Training of
Diffusion Transformer for Photorealistic Text-to-Image Synthesis", sec. 2.3 and Fig. 4).

Each block is self-attention, cross-attention from the image tokens to the caption's tokens
(padding masked out) and an MLP. adaLN-single: one MLP (`t_block`) maps the timestep embedding
to 6 x hidden shift/scale/gate values shared by every block, and each block adds its own learned
table (`scale_shift_table`) to them. The caption's embeddings [N, L, caption_channels] pass
through an MLP (`y_embedder.y_proj`) to the hidden width. Caption dropout (classifier-free
guidance) replaces a dropped caption by the learned null caption `y_embedder.y_embedding`
[L, caption_channels]. State-dict keys follow PixArt-alpha's `PixArt.py`.

Differences from the released model: attention through `scaled_dot_product_attention` with a
key-padding mask (the release uses xformers' block-diagonal masks); a dropped caption attends to
all L null tokens in training and sampling alike; DiT's size table names the sizes (PixArt-XL/2
is DiT-XL/2's width and depth); with `vocab_size > 0` the model holds a small text transformer
(`text_encoder`, trained with it) and `y` is token ids; `pooled_caption: true` adds a linear map
(`y_pool`) of the projected caption's mean over its tokens to the timestep embedding that
`t_block` and the final layer read, as Stable Diffusion 3 adds its pooled text vector to the
timestep embedding (Esser et al. 2024, sec. 4; GLIDE's UNet likewise), so the caption modulates
every block the way DiT's class label does, besides being attended to. PixArt-alpha has no such
path (off by default).
"""

from __future__ import annotations

import functools

import torch
from timm.models.vision_transformer import Mlp, PatchEmbed
from torch import nn

from speed.models import transformer_parts as parts
from speed.models.captions import (
    CaptionConditioned,
    attended,
    check_caption_arguments,
    padding_bias,
    text_transformer,
)
from speed.models.dit import Attention, TimestepEmbedder, paper_size, size_registry
from speed.models.layers import attention

tanh_gelu = functools.partial(nn.GELU, approximate="tanh")


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [N, T, D] * (1 + scale [N, 1, D]) + shift [N, 1, D]."""
    return x * (1 + scale) + shift


class MultiHeadCrossAttention(nn.Module):
    """Image tokens x [N, T, D] attend to caption tokens y [N, L, D] (PixArt's layout:
    `q_linear`, `kv_linear`, `proj`); with `context_dim`, y is [N, L, context_dim] (LDM's
    cross-attention, `speed.models.text_unet`)."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q_linear(x).reshape(n, tokens, heads, head_dim).transpose(1, 2)
        kv = self.kv_linear(y).reshape(n, y.shape[1], 2, heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, heads, L, head_dim]
        out = attention(q, k, v, bias=bias)  # [N, heads, T, head_dim]
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class PixArtBlock(nn.Module):
    """Self-attention, cross-attention, MLP; adaLN-single modulation (sec. 2.3)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=tanh_gelu, drop=0)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def forward(self, x, y, t0, bias):
        """x [N, T, D], caption y [N, L, D], t0 [N, 6 D], bias [N, 1, 1, L] -> [N, T, D]."""
        n, _, dim = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t0.reshape(n, 6, dim)
        ).chunk(6, dim=1)  # each [N, 1, D]
        x = x + gate_msa * self.attn(t2i_modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(x, y, bias)
        return x + gate_mlp * self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp))


class T2IFinalLayer(nn.Module):
    """LayerNorm modulated by the timestep embedding plus a learned table, then Linear."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        return self.linear(t2i_modulate(self.norm_final(x), shift, scale))


class CaptionEmbedder(nn.Module):
    """Caption embeddings [N, L, C] -> [N, L, D] by an MLP (`y_proj`); holds the null caption
    `y_embedding` [L, C] that dropped captions are replaced by."""

    def __init__(self, caption_channels: int, hidden_size: int, max_length: int):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden_size, hidden_size, act_layer=tanh_gelu, drop=0)
        self.y_embedding = nn.Parameter(
            torch.randn(max_length, caption_channels) / caption_channels**0.5
        )

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.y_proj(caption)


class PixArt(CaptionConditioned, parts.PatchBackbone):
    """Caption-conditioned DiT over patches of a [N, in_channels, H, W] input.

    Args:
        input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
        learn_sigma, grad_checkpointing, cfg_channels: as `speed.models.dit.DiT`.
        caption_channels: width of the text encoder's embeddings (T5 v1.1 XXL: 4096); with a
            model-held text transformer, its width.
        max_length: caption tokens L (PixArt-alpha: 120).
        caption_dropout_prob: probability of replacing a caption by the null caption in training.
        vocab_size: > 0 holds a `TextTransformer` over token ids 0..vocab_size-1 (trained with
            the model); `y` is then ids [N, L] instead of embeddings.
        text_depth, text_heads: that transformer's layers and heads (width `caption_channels`).
        pooled_caption: add the pooled caption to the timestep embedding (module docstring).
    """

    shard_unit_types = (PixArtBlock,)
    guidance_needs = "a PixArt trained with caption dropout (caption_dropout_prob > 0)"
    input_name = "PixArt"
    # Layers LoRA adapts by default (speed.adapters): every block's attention and MLP linears.
    adapter_targets = (
        r".*blocks\.\d+\.(attn\.(qkv|proj)|cross_attn\.(q_linear|kv_linear|proj)|mlp\.fc[12])"
    )

    def __init__(
        self,
        input_size: int | tuple[int, int] = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        caption_channels: int = 4096,
        max_length: int = 120,
        caption_dropout_prob: float = 0.1,
        learn_sigma: bool = True,
        grad_checkpointing: bool = False,
        cfg_channels: int | str = "all",
        vocab_size: int = 0,
        text_depth: int = 4,
        text_heads: int = 4,
        pooled_caption: bool = False,
    ):
        height, width = parts.patch_grid_size(input_size, patch_size, hidden_size, num_heads)
        check_caption_arguments(caption_channels, max_length)
        super().__init__(
            input_size=(height, width),
            patch_size=patch_size,
            in_channels=in_channels,
            learn_sigma=learn_sigma,
            num_classes=0,
            class_dropout_prob=caption_dropout_prob,
            cfg_channels=cfg_channels,
            grad_checkpointing=grad_checkpointing,
        )
        self.has_null_label = caption_dropout_prob > 0  # the null caption
        self.max_length = max_length

        self.text_encoder = text_transformer(
            vocab_size, max_length, caption_channels, text_depth, text_heads
        )
        self.x_embedder = PatchEmbed(
            (height, width), patch_size, in_channels, hidden_size, bias=True
        )
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, max_length)
        self.y_pool = nn.Linear(hidden_size, hidden_size) if pooled_caption else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_tokens, hidden_size), requires_grad=False
        )
        self.blocks = nn.ModuleList(
            [PixArtBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = T2IFinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """PixArt-alpha's: Xavier-uniform linears, N(0, 0.02) timestep and caption MLPs, sin-cos
        positions, zero cross-attention outputs and output layer (each block starts as DiT's
        self-attention + MLP block)."""
        # the text transformer keeps its own initialisation
        parts.xavier_linears(
            *(child for name, child in self.named_children() if name != "text_encoder")
        )
        parts.fill_sincos(self.pos_embed, self.grid_size)
        parts.init_patch_embed(self.x_embedder)
        parts.init_timestep_embedder(self.t_embedder)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)
        parts.zero_layers(
            *(block.cross_attn.proj for block in self.blocks), self.final_layer.linear
        )

    @property
    def null_caption(self) -> torch.Tensor:
        """The null caption [L, caption_channels] (`y_embedder.y_embedding`)."""
        return self.y_embedder.y_embedding

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [N, C, H, W], timesteps t [N], caption y [N, L, caption_channels] (token ids [N, L]
        with a model-held text transformer; None = the null caption), mask [N, L] bool (None =
        all tokens) -> [N, out_channels, H, W]."""
        self._check_input(x)
        n = x.shape[0]
        x = self.x_embedder(x) + self.pos_embed  # [N, T, D]
        t = self.t_embedder(t)  # [N, D]
        caption, mask = self.caption(y, mask, n, force_drop_ids)
        caption = self.y_embedder(caption)  # [N, L, D]
        if self.y_pool is not None:
            t = t + self.y_pool(self.pooled(caption, mask))
        t0 = self.t_block(t)  # [N, 6 D], shared by every block
        # An empty caption (no token) attends to all its tokens rather than to none.
        bias = padding_bias(attended(mask), caption.dtype)  # [N, 1, 1, L]
        for block in self.blocks:
            x = self.run_block(block, x, caption, t0, bias)  # [N, T, D]
        x = self.final_layer(x, t)  # [N, T, p * p * out_channels]
        return self.unpatchify(x)  # [N, out_channels, H, W]


PixArt_models = size_registry(
    PixArt, "PixArt", "{family}-{size}/{patch}: depth {depth}, hidden {hidden}, heads {heads}."
)


def build_pixart(
    name: str = "PixArt-XL/2",
    input_size: int | tuple[int, int] = 32,
    in_channels: int = 4,
    learn_sigma: bool = True,
    hidden_size: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    patch_size: int | None = None,
    mlp_ratio: float = 4.0,
    caption_channels: int = 4096,
    max_length: int = 120,
    caption_dropout_prob: float = 0.1,
    grad_checkpointing: bool = False,
    cfg_channels: int | str = "all",
    vocab_size: int = 0,
    text_depth: int = 4,
    text_heads: int = 4,
    pooled_caption: bool = False,
) -> PixArt:
    """A PixArt of a DiT paper size by name (e.g. "PixArt-XL/2"); any size argument given
    overrides it. The caption arguments (caption_channels, max_length, vocab_size) come from the
    `text_encoder` node when the config leaves them out.

    Config-friendly: `model: {_target_: speed.models.pixart.build_pixart, name: PixArt-S/2}`.
    """
    return PixArt(**paper_size(PixArt_models, "PixArt", **locals()))
