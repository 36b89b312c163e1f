"""MDT (v2 layout): the masked pass against the unmasked one, the encoder's independence from masked
patches, the relative position bias, the two-pass loss written out by hand (with SpeeD's
weights), the mask ratio's jitter, and MDT-XL/2's layout and size."""

import pytest
import torch
from test_dit import randomize_

from speed.diffusion import create_diffusion
from speed.models import MDT, DiT_models, MDT_models, build_mdt, masking
from speed.models.mdt import RelativePositionBias

TINY = dict(
    input_size=8, patch_size=2, hidden_size=32, depth=4, num_heads=4, num_classes=5, decode_layer=2
)  # 16 tokens; encoder halves of 1 block, 2 decoder blocks


def tiny_mdt(**overrides) -> MDT:
    return randomize_(MDT(**{**TINY, **overrides}), std=0.2).eval()


def inputs(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 8, 8, generator=gen)
    t = torch.randint(0, 1000, (n,), generator=gen)
    y = torch.randint(0, 5, (n,), generator=gen)
    return x, t, y


def test_masked_pass_keeping_every_token_is_the_unmasked_pass():
    """Mask ratio 0 (all 16 tokens kept, shuffled): the side-interpolater keeps every encoder
    token, so the masked pass equals the unmasked one (the sampling path) on the same weights."""
    model = tiny_mdt()
    x, t, y = inputs()
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    out = model(x, t, y, mask_noise=noise, num_keep=16)
    plain = model(x, t, y)
    torch.testing.assert_close(out["output"], plain, atol=0, rtol=0)
    torch.testing.assert_close(out["masked_output"], plain, atol=1e-5, rtol=1e-5)


def test_encoder_ignores_the_masked_patches():
    model = tiny_mdt()
    x, t, y = inputs()
    ids_keep, ids_restore = masking.shuffle(torch.rand(3, 16), 10)
    c = model.t_embedder(t) + model.y_embedder(y)

    def encode(images):
        return model.encode(model.x_embedder(images) + model.pos_embed, c, ids_keep)

    masked_pixels = masking.pixel_mask(masking.token_mask(ids_restore, 10), (4, 4), 2)
    encoded = encode(x)
    assert encoded.shape == (3, 10, 32)
    assert torch.equal(encode(x + 3.0 * masked_pixels * torch.randn_like(x)), encoded)
    assert not torch.allclose(encode(x + 3.0 * (1 - masked_pixels) * torch.randn_like(x)), encoded)


def test_relative_position_bias_indexes_the_2d_offset():
    bias = RelativePositionBias((3, 4), num_heads=2)  # non-square grid, 12 tokens
    table = bias.relative_position_bias_table
    assert table.shape == (5 * 7 + 3, 2)
    full = bias()
    assert full.shape == (2, 12, 12)
    for i in range(12):
        for j in range(12):
            dy, dx = i // 4 - j // 4, i % 4 - j % 4
            assert torch.equal(full[:, i, j], table[(dy + 2) * 7 + (dx + 3)])
    ids = torch.tensor([[5, 0, 11], [2, 7, 3]])
    kept = bias(ids)
    assert kept.shape == (2, 2, 3, 3)
    for n in range(2):
        assert torch.equal(kept[n], full[:, ids[n]][:, :, ids[n]])


def test_two_pass_loss_written_out():
    """loss = w (mse_unmasked + mse_masked) + vb_unmasked + vb_masked, every term over all
    pixels, both passes on the same x_t (Gao et al. sec. 3.3; MDT's trainer sums the two)."""
    model = tiny_mdt().train()
    diffusion = create_diffusion("", faster=True, learn_sigma=True)
    x0, t, y = inputs()
    eps = torch.randn_like(x0)
    kwargs = model.training_inputs(0, 3, torch.Generator().manual_seed(2))
    weights = torch.as_tensor(diffusion.timestep_sampler.weights, dtype=torch.float32)[t]
    force = torch.zeros(3, dtype=torch.long)
    terms = diffusion.training_losses(
        model, x0, t, {"y": y, "force_drop_ids": force, **kwargs}, noise=eps, weights=weights
    )

    abar = torch.tensor(diffusion.alphas_cumprod, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    out = model(x_t, t, y, force_drop_ids=force, **kwargs)
    for key, prediction in (("mse", out["output"]), ("masked_mse", out["masked_output"])):
        mse = ((prediction[:, :4] - eps) ** 2).mean(dim=(1, 2, 3))
        torch.testing.assert_close(terms[key], mse, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(terms["mse"], terms["masked_mse"])
    total = weights * terms["mse"] + terms["vb"] + weights * terms["masked_mse"]
    torch.testing.assert_close(terms["loss"], total + terms["masked_vb"], atol=0, rtol=0)
    assert sorted(terms) == ["loss", "masked_mse", "masked_vb", "mse", "vb"]


def test_every_parameter_trains_in_one_call():
    model = tiny_mdt().train()
    x, t, y = inputs()
    kwargs = model.training_inputs(0, 3, torch.Generator().manual_seed(0))
    out = model(x, t, y, **kwargs)
    (out["output"].square().mean() + out["masked_output"].square().mean()).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), [
        name for name, g in grads.items() if g is None or g.abs().sum() == 0
    ]


def test_mask_ratio_jitter():
    """Each step masks mask_ratio + U[0, jitter) of the tokens (MDTv2: [0.3, 0.5))."""
    model = tiny_mdt(input_size=32)  # 256 tokens
    keeps = [
        model.training_inputs(0, 2, torch.Generator().manual_seed(s))["num_keep"]
        for s in range(200)
    ]
    assert min(keeps) >= int(256 * 0.5) and max(keeps) <= int(256 * 0.7)
    assert len(set(keeps)) > 20
    fixed = tiny_mdt(mask_ratio=0.3, mask_ratio_jitter=0.0)
    assert fixed.training_inputs(0, 1, torch.Generator())["num_keep"] == int(16 * 0.7)
    with pytest.raises(ValueError, match="mask_ratio_jitter"):
        MDT(**{**TINY, "mask_ratio": 0.9, "mask_ratio_jitter": 0.2})
    with pytest.raises(ValueError, match="decode_layer"):
        MDT(**{**TINY, "decode_layer": 1})


def test_guidance_and_unconditional():
    model = tiny_mdt()
    x, t, y = inputs(2)
    guided = model.forward_with_cfg(
        torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, 5)]), 2.0
    )
    cond, uncond = model(x, t, y), model(x, t, None)
    expected = uncond[:, :3] + 2 * (cond[:, :3] - uncond[:, :3])
    torch.testing.assert_close(guided[:2, :3], expected, atol=1e-4, rtol=1e-4)  # batch 4 vs 2
    plain = tiny_mdt(num_classes=0)
    assert plain(x, t).shape == (2, 8, 8, 8) and plain.y_embedder is None


def test_registry_and_xl2_layout():
    """MDT-XL/2 as sail-sg/MDT's MDTv2_XL_2 (decode_layer 4): 12 + 12 encoder blocks, 4 decoder
    blocks, 1 side block, 742,263,904 parameters (the count of the released model built with the
    same arguments; learned positions included)."""
    assert sorted(MDT_models) == sorted(name.replace("DiT", "MDT") for name in DiT_models)
    with torch.device("meta"):
        model = build_mdt("MDT-XL/2")
    kwargs = model.training_inputs(0, 2, torch.Generator().manual_seed(0))
    with torch.device("meta"):
        x = torch.empty(2, 4, 32, 32)
        t = torch.zeros(2, dtype=torch.long)
        out = model.train()(x, t, torch.zeros(2, dtype=torch.long), **kwargs)
    blocks = [len(b) for b in (model.en_inblocks, model.en_outblocks, model.de_blocks)]
    assert blocks == [12, 12, 4] and len(model.sideblocks) == 1
    assert sum(p.numel() for p in model.parameters()) == 742_263_904
    bias = model.en_inblocks[0].attn.rel_pos_bias.relative_position_bias_table
    assert bias.shape == (31 * 31 + 3, 16)
    assert 128 <= kwargs["num_keep"] <= 179 and kwargs["mask_noise"].shape == (2, 256)
    assert out["output"].shape == out["masked_output"].shape == (2, 8, 32, 32)
