"""ADM UNet: guided-diffusion's keys and shapes, parameter counts of the paper's models, attention
layouts and ResBlocks against their equations, init, guidance and options."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speed.models import UNetModel
from speed.models.unet import AttentionBlock, ResBlock, attention_downsample_rates

# guided-diffusion's ImageNet 64x64 model (scripts' flags), attention_resolutions as resolutions.
ADM64 = dict(
    image_size=64, in_channels=3, model_channels=192, num_res_blocks=3,
    attention_resolutions="32,16,8", dropout=0.1, channel_mult=(1, 2, 3, 4), num_classes=1000,
    num_head_channels=64, use_scale_shift_norm=True, resblock_updown=True,
    use_new_attention_order=True, learn_sigma=True,
)  # fmt: skip
TINY = dict(
    image_size=16, in_channels=3, model_channels=32, num_res_blocks=1, attention_resolutions=(2,),
    channel_mult=(1, 2), num_classes=3, num_head_channels=16, use_scale_shift_norm=True,
    resblock_updown=True, use_new_attention_order=True, learn_sigma=True,
)  # fmt: skip


def tiny_unet(**overrides) -> UNetModel:
    return UNetModel(**{**TINY, **overrides})


def randomize_(model, seed=0, std=0.1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def adm64_expected_shapes() -> dict[str, tuple]:
    """Keys and shapes of guided-diffusion's 64x64 ImageNet UNet, listed from its architecture:
    widths 192 * (1, 2, 3, 4) at 64, 32, 16, 8 pixels, 3 ResBlocks per level (4 in the decoder),
    attention (64-channel heads) at 32, 16 and 8 pixels, ResBlock resampling, FiLM ResBlocks."""
    emb, shapes = 768, {}

    def add(name, *shape_list):
        for suffix, shape in zip(("weight", "bias"), shape_list):
            shapes[f"{name}.{suffix}"] = shape

    def conv(name, cin, cout, k):
        add(name, (cout, cin, k, k), (cout,))

    def res(prefix, cin, cout):
        add(f"{prefix}.in_layers.0", (cin,), (cin,))
        conv(f"{prefix}.in_layers.2", cin, cout, 3)
        add(f"{prefix}.emb_layers.1", (2 * cout, emb), (2 * cout,))
        add(f"{prefix}.out_layers.0", (cout,), (cout,))
        conv(f"{prefix}.out_layers.3", cout, cout, 3)
        if cin != cout:
            conv(f"{prefix}.skip_connection", cin, cout, 1)

    def attn(prefix, c):
        add(f"{prefix}.norm", (c,), (c,))
        add(f"{prefix}.qkv", (3 * c, c, 1), (3 * c,))
        add(f"{prefix}.proj_out", (c, c, 1), (c,))

    add("time_embed.0", (emb, 192), (emb,))
    add("time_embed.2", (emb, emb), (emb,))
    shapes["label_emb.weight"] = (1000, emb)
    conv("input_blocks.0.0", 3, 192, 3)
    # Encoder: (block index, in, out, attention?) then the down-ResBlocks 4, 8, 12.
    encoder = [(1, 192, 192), (2, 192, 192), (3, 192, 192), (5, 192, 384), (6, 384, 384),
               (7, 384, 384), (9, 384, 576), (10, 576, 576), (11, 576, 576), (13, 576, 768),
               (14, 768, 768), (15, 768, 768)]  # fmt: skip
    for index, cin, cout in encoder:
        res(f"input_blocks.{index}.0", cin, cout)
        if index > 4:  # 32 pixels and below
            attn(f"input_blocks.{index}.1", cout)
    for index, c in ((4, 192), (8, 384), (12, 576)):
        res(f"input_blocks.{index}.0", c, c)
    res("middle_block.0", 768, 768)
    attn("middle_block.1", 768)
    res("middle_block.2", 768, 768)
    # Decoder: ResBlock on [h, skip]; skips pop from the encoder's outputs in reverse.
    skips = [192] * 5 + [384] * 4 + [576] * 4 + [768] * 3  # conv, ResBlocks, downsamplers
    ch = 768
    for level, width in ((3, 768), (2, 576), (1, 384), (0, 192)):
        for i in range(4):
            index = (3 - level) * 4 + i
            res(f"output_blocks.{index}.0", ch + skips.pop(), width)
            ch = width
            if level > 0:  # 8, 16, 32 pixels
                attn(f"output_blocks.{index}.1", width)
            if level > 0 and i == 3:
                res(f"output_blocks.{index}.2", width, width)
    add("out.0", (192,), (192,))
    conv("out.2", 192, 6, 3)
    return shapes


def test_adm64_state_dict_keys_and_shapes_match_guided_diffusion():
    with torch.device("meta"):
        model = UNetModel(**ADM64)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = adm64_expected_shapes()
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert model.attention_resolutions == (2, 4, 8)


@pytest.mark.parametrize(
    "config, paper_millions",
    [(ADM64, 296),
     (dict(image_size=256, model_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
           channel_mult=(1, 1, 2, 2, 4, 4), num_classes=1000, num_head_channels=64,
           use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True), 554)],
)  # fmt: skip
def test_param_counts_of_the_paper_models(config, paper_millions):
    """ADM paper (Dhariwal & Nichol 2021), hyperparameter table: 296M (64x64), 554M (256x256)."""
    with torch.device("meta"):
        model = UNetModel(**config)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == paper_millions


@pytest.mark.parametrize("new_order", [False, True])
@pytest.mark.parametrize("fused", [True, False])
@torch.no_grad()
def test_attention_block_layouts(new_order, fused):
    """Legacy order: per head [q, k, v] channel groups; new order: [q all heads, k, v]."""
    channels, heads, ch = 64, 2, 32
    block = randomize_(
        AttentionBlock(channels, num_head_channels=ch, use_new_attention_order=new_order)
    ).double()
    block.fused = fused
    x = torch.randn(2, channels, 3, 4, dtype=torch.float64)
    got = block(x)
    flat = x.reshape(2, channels, 12)
    normed = F.group_norm(flat, 32, block.norm.weight, block.norm.bias, eps=1e-5)
    qkv = torch.einsum("oc,bct->bot", block.qkv.weight[:, :, 0], normed) + block.qkv.bias[:, None]
    out = np.zeros((2, channels, 12))
    for b in range(2):
        for h in range(heads):
            if new_order:
                q, k, v = (
                    qkv[b, part * channels + h * ch : part * channels + (h + 1) * ch]
                    for part in range(3)
                )
            else:
                base = h * 3 * ch
                q, k, v = (qkv[b, base + part * ch : base + (part + 1) * ch] for part in range(3))
            scores = (q.T @ k / math.sqrt(ch)).numpy()  # [T, S]
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            out[b, h * ch : (h + 1) * ch] = v.numpy() @ weights.T
    proj = block.proj_out.weight[:, :, 0].numpy()
    expected = (
        flat.numpy() + np.einsum("oc,bct->bot", proj, out) + block.proj_out.bias.numpy()[:, None]
    )
    np.testing.assert_allclose(got.reshape(2, channels, 12).numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_block_takes_sdpas_fused_kernel(new_order):
    """q, k, v reach SDPA with the head dimension innermost; strided views fall back to the
    math path (softmax written out: slower on CPU, and no flash kernel on GPU)."""
    block = randomize_(AttentionBlock(64, num_head_channels=32, use_new_attention_order=new_order))
    x = torch.randn(2, 64, 4, 4, requires_grad=True)
    with torch.profiler.profile() as prof:
        block(x).sum().backward()
    ops = {event.key for event in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in ops
    assert "aten::_scaled_dot_product_attention_math" not in ops


def test_resblock_down_with_scale_shift_matches_equations():
    block = randomize_(ResBlock(32, 16, 0.0, 64, use_scale_shift_norm=True, down=True)).double()
    x, emb = torch.randn(2, 32, 8, 8, dtype=torch.float64), torch.randn(2, 16, dtype=torch.float64)
    p = dict(block.named_parameters())

    def gn(v, name):
        return F.group_norm(v, 32, p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    h = F.avg_pool2d(F.silu(gn(x, "in_layers.0")), 2)  # resample after the activation
    h = F.conv2d(h, p["in_layers.2.weight"], p["in_layers.2.bias"], padding=1)
    film = F.silu(emb) @ p["emb_layers.1.weight"].T + p["emb_layers.1.bias"]
    scale, shift = film[:, :64, None, None], film[:, 64:, None, None]
    h = F.silu(gn(h, "out_layers.0") * (1 + scale) + shift)
    h = F.conv2d(h, p["out_layers.3.weight"], p["out_layers.3.bias"], padding=1)
    skip = F.conv2d(F.avg_pool2d(x, 2), p["skip_connection.weight"], p["skip_connection.bias"])
    torch.testing.assert_close(block(x, emb), skip + h, atol=1e-12, rtol=1e-12)


def test_sdpa_equals_explicit_attention_in_the_full_model():
    model = randomize_(tiny_unet()).eval()
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 500]), torch.tensor([0, 2])
    fused = model(x, t, y)
    for module in model.modules():
        if isinstance(module, AttentionBlock):
            module.fused = False
    torch.testing.assert_close(fused, model(x, t, y), atol=1e-5, rtol=0)


def test_fresh_model_outputs_zero_and_has_learned_sigma_channels():
    model = tiny_unet()
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.tensor([0, 1]))
    assert out.shape == (2, 6, 16, 16)
    assert torch.count_nonzero(out) == 0  # out.2 is zero-initialised
    assert (model.in_channels, model.out_channels, model.learn_sigma) == (3, 6, True)
    assert tiny_unet(out_channels=5).out_channels == 5


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    model = randomize_(tiny_unet(), seed=2).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = tiny_unet().eval()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt"), strict=True)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([5, 6]), torch.tensor([1, 2])
    assert torch.equal(model(x, t, y), fresh(x, t, y))


def test_gradient_checkpointing_gives_the_same_gradients():
    """Off, then on under guided-diffusion's name and under the name shared with DiT."""
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 900]), torch.tensor([0, 2])
    grads, losses, keys = [], [], []
    for switch in ({}, {"use_checkpoint": True}, {"grad_checkpointing": True}):
        model = randomize_(tiny_unet(**switch, dropout=0.3)).train()
        assert model.grad_checkpointing == model.use_checkpoint == bool(switch)
        torch.manual_seed(0)  # same dropout masks; checkpointing must replay them
        loss = model(x, t, y).square().sum()
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        losses.append(loss.detach())
        keys.append(list(model.state_dict()))
    for other in (1, 2):
        assert keys[0] == keys[other]
        torch.testing.assert_close(losses[0], losses[other], atol=1e-6, rtol=1e-6)
        for name in grads[0]:
            torch.testing.assert_close(grads[0][name], grads[other][name], atol=1e-6, rtol=1e-5)


def test_label_table_null_row_and_unconditional_mode():
    assert tiny_unet().label_emb.weight.shape == (3, 128)  # guided-diffusion's shape
    model = randomize_(tiny_unet(class_dropout_prob=1.0)).double()
    assert model.label_emb.weight.shape == (4, 128)
    x, t = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([3, 4])
    null = torch.tensor([3, 3])
    model.train()  # every label dropped
    torch.testing.assert_close(model(x, t, torch.tensor([0, 1])), model(x, t, null))
    model.eval()
    torch.testing.assert_close(model(x, t, None), model(x, t, null))
    for num_classes in (None, 0):
        uncond = randomize_(tiny_unet(num_classes=num_classes)).eval()
        assert uncond.num_classes == 0 and not hasattr(uncond, "label_emb")
        assert torch.equal(uncond(x.float(), t, torch.tensor([0, 1])), uncond(x.float(), t))


def test_forward_with_cfg_guides_all_input_channels_by_default():
    model = randomize_(tiny_unet(class_dropout_prob=0.1)).double().eval()
    x_half = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    x, t, y = torch.cat([x_half, x_half]), torch.tensor([7, 8, 7, 8]), torch.tensor([0, 1, 3, 3])
    cond, uncond = model(x_half, t[:2], y[:2]), model(x_half, t[:2], y[2:])
    torch.testing.assert_close(model.forward_with_cfg(x, t, y, 1.0)[:2, :3], cond[:, :3])
    out = model.forward_with_cfg(x, t, y, 3.0)
    torch.testing.assert_close(out[:2, :3], uncond[:, :3] + 3.0 * (cond[:, :3] - uncond[:, :3]))
    torch.testing.assert_close(out[:2, 3:], cond[:, 3:])  # the variance channels pass through
    with pytest.raises(ValueError, match="label dropout"):
        tiny_unet().forward_with_cfg(x.float(), t, y, 2.0)


def test_attention_resolutions_forms():
    assert attention_downsample_rates("32,16,8", 64) == (2, 4, 8)
    assert attention_downsample_rates((2, 4), 64) == (2, 4)
    assert attention_downsample_rates([4], 28) == (4,)
    with pytest.raises(ValueError, match="not levels of this UNet at image_size 28"):
        attention_downsample_rates("16,8", 28)
    assert tiny_unet(channel_mult="1,2").out_channels == 6


def test_bad_sizes_fail_with_clear_errors():
    with pytest.raises(ValueError, match="divisible by 2"):
        tiny_unet(image_size=15)
    with pytest.raises(ValueError, match="H and W divisible by 2"):
        tiny_unet()(torch.randn(1, 3, 15, 16), torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="dims=3"):
        tiny_unet(dims=3)


def test_norm_groups_reach_every_group_norm_and_allow_narrow_levels():
    norms = lambda m: [x for x in m.modules() if isinstance(x, torch.nn.GroupNorm)]  # noqa: E731
    assert {n.num_groups for n in norms(tiny_unet())} == {32}  # guided-diffusion's default
    narrow = tiny_unet(model_channels=16, num_head_channels=8, norm_groups=8)
    assert {n.num_groups for n in norms(narrow)} == {8}
    assert len(norms(narrow)) == len(norms(tiny_unet()))  # out, ResBlocks and attention alike
    x = torch.randn(2, 3, 16, 16)
    assert narrow(x, torch.tensor([1, 500]), torch.tensor([0, 2])).shape == (2, 6, 16, 16)
    with pytest.raises(ValueError, match="16 channels do not split into model.norm_groups=32"):
        tiny_unet(model_channels=16, num_head_channels=8)


def test_use_fp16_converts_the_torso_convs():
    model = tiny_unet(use_fp16=True)
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert model.input_blocks[1][0].emb_layers[1].weight.dtype == torch.float32
    assert model.out[2].weight.dtype == torch.float32
    model.convert_to_fp32()
    assert model.input_blocks[1][0].in_layers[2].weight.dtype == torch.float32
