"""MaskDiT: the masked forward against the unmasked one, the encoder's independence from masked
patches, the loss written out by hand, the unmasked stage, the mask's randomness, SpeeD on it,
and MaskDiT-XL/2's size against the paper."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_dit import randomize_

from speed.diffusion import create_diffusion
from speed.models import DiT_models, MaskDiT, MaskDiT_models, build_maskdit, masking
from speed.runners.train import _StepRandomness

TINY = dict(
    input_size=8,
    patch_size=2,
    hidden_size=32,
    depth=2,
    num_heads=4,
    num_classes=5,
    decoder_hidden_size=16,
    decoder_depth=1,
    decoder_num_heads=2,
)  # 16 tokens


def tiny_maskdit(**overrides) -> MaskDiT:
    return randomize_(MaskDiT(**{**TINY, **overrides}), std=0.2).eval()


def inputs(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 8, 8, generator=gen)
    t = torch.randint(0, 1000, (n,), generator=gen)
    y = torch.randint(0, 5, (n,), generator=gen)
    return x, t, y


def test_keeping_every_token_equals_the_unmasked_forward():
    """Mask ratio 0 through the masked path (all 16 tokens kept, in a random order) gives the
    plain forward (the sampling path) on the same weights: attention is permutation-equivariant
    and the tokens are put back in place."""
    model = tiny_maskdit()
    x, t, y = inputs()
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    out = model(x, t, y, mask_noise=noise, num_keep=16)
    torch.testing.assert_close(out["output"], model(x, t, y), atol=1e-5, rtol=1e-5)
    assert torch.equal(out["visible"], torch.ones(3, 1, 8, 8))


def test_encoder_ignores_the_masked_patches():
    model = tiny_maskdit()
    x, t, y = inputs()
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(2))
    ids_keep, ids_restore = masking.shuffle(noise, 8)
    c = model._condition(t, y, None)
    encoded = model.encode(x, c, ids_keep)
    assert encoded.shape == (3, 8, 32)
    masked_pixels = masking.pixel_mask(masking.token_mask(ids_restore, 8), (4, 4), 2)
    changed = x + 5.0 * masked_pixels * torch.randn_like(x)
    torch.testing.assert_close(model.encode(changed, c, ids_keep), encoded, atol=0, rtol=0)
    visible_change = x + 5.0 * (1 - masked_pixels) * torch.randn_like(x)
    assert not torch.allclose(model.encode(visible_change, c, ids_keep), encoded)


def test_mask_has_the_ratio_and_the_pixel_map_follows_the_tokens():
    noise = torch.rand(2, 16, generator=torch.Generator().manual_seed(3))
    ids_keep, ids_restore = masking.shuffle(noise, 8)
    mask = masking.token_mask(ids_restore, 8)
    assert mask.sum(dim=1).tolist() == [8.0, 8.0]
    assert (mask.gather(1, ids_keep) == 0).all()  # kept tokens are the visible ones
    # the 8 smallest noises are kept
    assert torch.equal(mask, (noise > noise.sort(dim=1).values[:, 7:8]).float())
    pixels = masking.pixel_mask(mask, (4, 4), 2)
    tokens_again = F.avg_pool2d(pixels, 2).flatten(1)
    assert torch.equal(tokens_again, mask)


def test_training_loss_written_out():
    """loss = w * mse over visible pixels + vb over visible pixels + 0.1 * MAE on the masked
    patches, against the formulas of MaskDiT eq. 4-5 with the DDPM eps target."""
    model = tiny_maskdit(mae_loss_coef=0.1).train()
    diffusion = create_diffusion("", learn_sigma=True)
    x0, t, y = inputs()
    eps = torch.randn_like(x0)
    gen = torch.Generator().manual_seed(4)
    kwargs = model.training_inputs(0, 3, gen)
    assert kwargs["num_keep"] == 8
    weights = torch.tensor([0.5, 1.0, 2.0])
    force = torch.zeros(3, dtype=torch.long)
    terms = diffusion.training_losses(
        model, x0, t, {"y": y, "force_drop_ids": force, **kwargs}, noise=eps, weights=weights
    )

    abar = torch.tensor(diffusion.alphas_cumprod, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    out = model(x_t, t, y, force_drop_ids=force, **kwargs)["output"]
    _, ids_restore = masking.shuffle(kwargs["mask_noise"], 8)
    mask = masking.token_mask(ids_restore, 8)  # [N, 16], 1 = masked
    sq = ((out[:, :4] - eps) ** 2).mean(dim=1)  # [N, 8, 8]
    per_token = F.avg_pool2d(sq.unsqueeze(1), 2).flatten(1)  # [N, 16]
    mse = (per_token * (1 - mask)).sum(1) / (1 - mask).sum(1)
    torch.testing.assert_close(terms["mse"], mse, atol=1e-6, rtol=1e-5)

    patches = x_t.reshape(3, 4, 4, 2, 4, 2).permute(0, 2, 4, 3, 5, 1).reshape(3, 16, 16)
    normed = (patches - patches.mean(-1, keepdim=True)) / (
        patches.var(-1, keepdim=True) + 1e-6
    ).sqrt()
    pred = out[:, :4].reshape(3, 4, 4, 2, 4, 2).permute(0, 2, 4, 3, 5, 1).reshape(3, 16, 16)
    mae = (((pred - normed) ** 2).mean(-1) * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(terms["mae"], 0.1 * mae, atol=1e-6, rtol=1e-5)

    full_vb = diffusion.training_losses(
        lambda *_, **__: torch.cat([out[:, :4].detach(), out[:, 4:]], 1), x0, t, noise=eps
    )["vb"]
    assert not torch.allclose(terms["vb"], full_vb)  # vb is averaged over visible pixels only
    torch.testing.assert_close(
        terms["loss"], weights * terms["mse"] + terms["vb"] + terms["mae"], atol=0, rtol=0
    )


def test_unmasked_stage_and_the_ratio_schedule():
    model = tiny_maskdit(mask_ratio=0.75, unmask_at_step=10)
    gen = torch.Generator().manual_seed(0)
    assert model.mask_ratio_at(9) == 0.75 and model.mask_ratio_at(10) == 0.0
    assert model.training_inputs(9, 2, gen)["num_keep"] == 4
    assert model.training_inputs(10, 2, gen) == {}
    # Unmasked training still gives the mask token a (zero) gradient, so DDP sees every parameter.
    model.train()
    x, t, y = inputs()
    model(x, t, y).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert torch.count_nonzero(model.mask_token.grad) == 0


@pytest.mark.parametrize("ratio", [1.0, -0.1, 0.97])
def test_bad_mask_ratio_is_refused(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskDiT(**{**TINY, "mask_ratio": ratio})


def test_mask_is_reproducible_and_differs_across_ranks_and_steps():
    """The training loop's step draws: same (seed, step) -> same masks; another step or another
    rank's samples -> other masks; 2 ranks x 2 samples see exactly 1 rank's 4 samples."""
    model = tiny_maskdit()
    sampler = create_diffusion("").timestep_sampler

    def masks(seed, step):
        draw = _StepRandomness.draw(
            sampler, seed, 4, (4, 8, 8), 0.1, lambda n, g: model.training_inputs(step, n, g)
        )
        return draw.inputs["mask_noise"], draw

    first, draw = masks(seed=7, step=3)
    again, _ = masks(seed=7, step=3)
    other_step, _ = masks(seed=8, step=4)
    assert torch.equal(first, again) and not torch.equal(first, other_step)
    world = 2
    rank_inputs = [draw.take(r + world * torch.arange(2), "cpu")[4] for r in range(world)]
    assert not torch.equal(rank_inputs[0]["mask_noise"], rank_inputs[1]["mask_noise"])
    rebuilt = torch.empty_like(first)
    for r, kwargs in enumerate(rank_inputs):
        rebuilt[r::world] = kwargs["mask_noise"]
        assert kwargs["num_keep"] == 8
    assert torch.equal(rebuilt, first)


def test_speed_timesteps_and_weights_apply_unchanged():
    """`diffusion.faster: true` on MaskDiT: the drawn t follow SpeeD's p_t (5x more often below
    tau = 700, then the dual steps) and the visible-token MSE carries SpeeD's weights."""
    model = tiny_maskdit().train()
    diffusion = create_diffusion("", faster=True, learn_sigma=True)
    sampler = diffusion.timestep_sampler
    draw = _StepRandomness.draw(
        sampler, 0, 20000, (1,), 0.0, lambda n, g: model.training_inputs(0, n, g)
    )
    drawn, dual = draw.t[:10001], draw.t[10001:]  # dual sampling: t, then |t - M|, M = 642
    below = float(sampler.probs[:700].sum())
    share = (drawn < 700).float().mean().item()
    assert below == pytest.approx(5 * 700 / (5 * 700 + 300))
    assert abs(share - below) < 4 * math.sqrt(below * (1 - below) / len(drawn))
    assert torch.equal(dual, (drawn[: len(dual)] - 642).abs())
    t, weights, noise, drop, kwargs = draw.take(torch.arange(3), "cpu")
    x0 = torch.randn(3, 4, 8, 8)
    noise = torch.randn_like(x0)
    y = torch.tensor([0, 1, 2])
    terms = diffusion.training_losses(
        model, x0, t, {"y": y, **kwargs}, noise=noise, weights=weights
    )
    assert torch.equal(weights, torch.as_tensor(sampler.weights, dtype=weights.dtype)[t])
    torch.testing.assert_close(
        terms["loss"], weights * terms["mse"] + terms["vb"] + terms["mae"], atol=0, rtol=0
    )


def test_guidance_and_unconditional():
    model = tiny_maskdit()
    x, t, y = inputs(2)
    both = torch.cat([x, x])
    labels = torch.cat([y, torch.full_like(y, 5)])
    guided = model.forward_with_cfg(both, torch.cat([t, t]), labels, 3.0)
    cond, uncond = model(x, t, y), model(x, t, None)
    torch.testing.assert_close(guided[:2, :3], uncond[:, :3] + 3 * (cond[:, :3] - uncond[:, :3]))
    plain = tiny_maskdit(num_classes=0)
    assert plain(x, t).shape == (2, 8, 8, 8) and plain.y_embedder is None


def test_registry_and_xl2_size_against_the_paper():
    """12 sizes like DiT's; MaskDiT-XL/2 is DiT-XL/2's encoder (the final layer aside) plus a
    decoder of 8 blocks at width 512: 730M parameters (Zheng et al. 2023, Table 1: 730M)."""
    assert sorted(MaskDiT_models) == sorted(f"Mask{name}" for name in DiT_models)
    with torch.device("meta"):
        model = build_maskdit("MaskDiT-XL/2")
        dit = DiT_models["DiT-XL/2"]()
        x = torch.empty(2, 4, 32, 32)
        t = torch.zeros(2, dtype=torch.long)
        y = torch.zeros(2, dtype=torch.long)
        kwargs = model.training_inputs(0, 2, None)
        out = model.train()(x, t, y, mask_noise=torch.empty(2, 256), num_keep=kwargs["num_keep"])
    count = sum(p.numel() for p in model.parameters())
    assert 730e6 <= count < 731e6  # 730.55M, fixed position tables included as for DiT
    decoder = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(("decoder", "mask_token", "final_layer"))
    )
    dit_final = sum(p.numel() for p in dit.final_layer.parameters())
    assert count - decoder == sum(p.numel() for p in dit.parameters()) - dit_final
    assert kwargs["num_keep"] == 128 and len(model.decoder_blocks) == 8
    assert out["output"].shape == (2, 8, 32, 32) and out["visible"].shape == (2, 1, 32, 32)
    assert out["losses"]["mae"].shape == (2,)
