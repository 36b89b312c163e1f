"""The PixArt-alpha DiT: PixArt's state-dict layout, adaLN-single, every DiT size, the padding
mask, caption dropout to the null caption, guidance, and the jointly trained text transformer."""

import pytest
import torch

from speed.models import DiT_models, PixArt_models, build_pixart
from speed.models.dit import DIT_SIZES


def tiny(**kwargs):
    torch.manual_seed(0)
    args = dict(
        name="PixArt-S/4", input_size=8, in_channels=2, hidden_size=32, depth=2, num_heads=4,
        caption_channels=12, max_length=5,
    )  # fmt: skip
    model = build_pixart(**{**args, **kwargs})
    with torch.no_grad():  # leave the zero initialisation, so every path shows in the output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def inputs(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 8, 8, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    y = torch.randn(n, 5, 12, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]][:n]).bool()
    return x, t, y, mask


def test_every_dit_size_and_pixart_state_dict_names():
    assert sorted(PixArt_models) == sorted("PixArt-" + k[len("DiT-") :] for k in DiT_models)
    model = build_pixart("PixArt-XL/2", depth=1, caption_channels=8, max_length=3)
    assert model.blocks[0].attn.qkv.in_features == DIT_SIZES["XL"][1]
    keys = set(model.state_dict())
    expected = {
        "pos_embed", "x_embedder.proj.weight", "t_embedder.mlp.0.weight", "t_block.1.weight",
        "y_embedder.y_embedding", "y_embedder.y_proj.fc1.weight", "y_embedder.y_proj.fc2.weight",
        "blocks.0.scale_shift_table", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
        "blocks.0.cross_attn.q_linear.weight", "blocks.0.cross_attn.kv_linear.weight",
        "blocks.0.cross_attn.proj.weight", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight",
        "final_layer.linear.weight", "final_layer.scale_shift_table",
    }  # fmt: skip
    assert expected <= keys
    assert not any("adaLN_modulation" in k for k in keys)  # adaLN-single: one shared t_block
    assert model.t_block[1].out_features == 6 * DIT_SIZES["XL"][1]
    assert model.blocks[0].scale_shift_table.shape == (6, DIT_SIZES["XL"][1])
    assert model.y_embedder.y_embedding.shape == (3, 8)


def test_fresh_model_is_dit_like_at_init():
    """Zero-initialised cross-attention outputs and output layer: the caption has no effect and
    the output is zero until training moves them."""
    torch.manual_seed(0)
    model = build_pixart("PixArt-S/4", input_size=8, in_channels=2, hidden_size=32, depth=2,
                         num_heads=4, caption_channels=12, max_length=5).eval()  # fmt: skip
    x, t, y, mask = inputs()
    assert torch.count_nonzero(model(x, t, y, mask)) == 0
    assert torch.count_nonzero(model.blocks[0].cross_attn.proj.weight) == 0


def test_padding_does_not_reach_the_output():
    model = tiny()
    x, t, y, mask = inputs()
    out = model(x, t, y, mask)
    assert out.shape == (3, 4, 8, 8)  # learn_sigma: 2 x in_channels
    changed = torch.where(mask[..., None], y, torch.randn_like(y) * 10)
    torch.testing.assert_close(model(x, t, changed, mask), out)
    assert not torch.allclose(model(x, t, y, torch.ones_like(mask)), out)  # the mask is used


def test_dropped_captions_are_the_null_caption():
    model = tiny()
    x, t, y, mask = inputs()
    null = model(x, t, None)
    dropped = model(x, t, y, mask, force_drop_ids=torch.ones(3, dtype=torch.long))
    torch.testing.assert_close(dropped, null)
    mixed = model(x, t, y, mask, force_drop_ids=torch.tensor([0, 1, 0]))
    torch.testing.assert_close(mixed[1], null[1])
    torch.testing.assert_close(mixed[0], model(x, t, y, mask)[0])
    assert not torch.allclose(mixed[0], null[0])


def test_guidance_mixes_the_caption_and_null_outputs():
    model = tiny(learn_sigma=False)
    x, t, y, mask = inputs(n=2)
    cond, uncond = model(x, t, y, mask), model(x, t, None)
    doubled = model.forward_with_cfg(
        torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]), 3.0,
        mask=torch.cat([mask, mask]), force_drop_ids=torch.tensor([0, 0, 1, 1]),
    )  # fmt: skip
    expected = uncond + 3.0 * (cond - uncond)
    torch.testing.assert_close(doubled[:2], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(doubled[2:], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="caption dropout"):
        tiny(caption_dropout_prob=0.0).forward_with_cfg(x, t, y, 2.0)


def test_model_held_text_transformer_trains_with_it():
    model = tiny(vocab_size=257, caption_channels=16, text_depth=1, text_heads=2).train()
    x, t, _, mask = inputs()
    ids = torch.randint(1, 257, (3, 5)) * mask
    loss = model(x, t, ids, mask, force_drop_ids=torch.zeros(3, dtype=torch.long)).square().mean()
    loss.backward()
    grad = model.text_encoder.token_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert any(k.startswith("text_encoder.") for k in model.state_dict())


def test_pooled_caption_joins_the_timestep_embedding():
    """With `pooled_caption`, t_block and the final layer read t_embedder(t) + y_pool(the mean of
    the projected caption over its unpadded tokens); without it, t_embedder(t) alone and no
    y_pool weights."""
    model = tiny(pooled_caption=True)
    x, t, y, mask = inputs()
    seen = []
    model.t_block.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    out = model(x, t, y, mask)
    projected = model.y_embedder(y)  # [3, 5, 32]
    means = torch.stack([projected[i, mask[i]].mean(0) for i in range(3)])
    torch.testing.assert_close(seen[0], model.t_embedder(t) + model.y_pool(means))
    assert not torch.allclose(model(x, t, y, torch.ones_like(mask)), out)
    torch.testing.assert_close(model(x, t, torch.where(mask[..., None], y, 9.0), mask), out)
    plain = tiny()
    plain.t_block.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    plain(x, t, y, mask)
    torch.testing.assert_close(seen[-1], plain.t_embedder(t))
    assert not any(k.startswith("y_pool") for k in plain.state_dict())
    assert model.state_dict()["y_pool.weight"].shape == (32, 32)


def test_bad_sizes_fail_when_built():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        build_pixart("PixArt-S/4", input_size=10)
    with pytest.raises(ValueError, match="caption tokens"):
        tiny()(*inputs()[:2], torch.randn(3, 7, 12))
