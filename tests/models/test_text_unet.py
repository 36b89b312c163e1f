"""The caption-conditioned UNet (`speed.models.TextUNet`): shapes for embeddings and ids, the
padding mask, caption dropout to the null caption, guidance, the pooled caption, the zero
initialisation, pixel patches, FSDP units and gradient checkpointing; from YAML: the demo variant
trains, resumes exactly and samples its prompts."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from speed.config import load_config
from speed.models import TextUNet, load_checkpoint
from speed.models.text_unet import SpatialTransformer
from speed.models.unet import ResBlock
from speed.runners.sample import sample
from speed.runners.train import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs/image/animals_text"
TINY_UNET = [
    "model.channel_mult=[1,2]", "model.attention_resolutions=[2]", "model.caption_channels=16",
    "model.text_depth=1", "model.text_heads=2", "data.num_pairs=64",
]  # fmt: skip


def tiny(perturb=True, **kwargs):
    torch.manual_seed(0)
    args = dict(
        image_size=8, in_channels=2, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(1, 2), num_head_channels=16, caption_channels=12, max_length=5,
        learn_sigma=True,
    )  # fmt: skip
    model = TextUNet(**{**args, **kwargs})
    if perturb:
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


def test_shapes_for_embeddings_and_for_ids():
    x, t, y, mask = inputs()
    assert tiny()(x, t, y, mask).shape == (3, 4, 8, 8)  # learn_sigma: 2 x in_channels
    model = tiny(vocab_size=257, caption_channels=16, text_depth=1, text_heads=2, learn_sigma=False)
    ids = torch.randint(1, 257, (3, 5)) * mask
    assert model(x, t, ids, mask).shape == (3, 2, 8, 8)
    assert model.text_encoder is not None and "y_embedding" in model.state_dict()


def test_fresh_model_has_zero_cross_attention_and_zero_output():
    model = tiny(perturb=False)
    outputs = []
    for block in model.modules():
        if isinstance(block, SpatialTransformer):
            for layer in block.transformer_blocks:
                layer.attn2.register_forward_hook(lambda m, i, o: outputs.append(o))
    x, t, y, mask = inputs()
    assert torch.count_nonzero(model(x, t, y, mask)) == 0
    assert len(outputs) == 7  # encoder 2, middle 1, decoder 4
    assert all(torch.count_nonzero(o) == 0 for o in outputs)


def test_padding_does_not_reach_the_output():
    model = tiny()
    x, t, y, mask = inputs()
    out = model(x, t, y, mask)
    changed = torch.where(mask[..., None], y, torch.randn_like(y) * 10)
    torch.testing.assert_close(model(x, t, changed, mask), out)
    assert not torch.allclose(model(x, t, y, torch.ones_like(mask)), out)  # the mask is used


def test_an_empty_caption_attends_to_all_its_tokens():
    model = tiny()
    x, t, y, _ = inputs()
    empty, full = torch.zeros(3, 5, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)
    out = model(x, t, y, empty)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, model(x, t, y, full))


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


def test_guidance_at_scale_one_is_the_conditional_output_and_mixes_otherwise():
    model = tiny(learn_sigma=False)
    x, t, y, mask = inputs(n=2)
    cond, uncond = model(x, t, y, mask), model(x, t, None)

    def guided(scale):
        return model.forward_with_cfg(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]), scale,
            mask=torch.cat([mask, mask]), force_drop_ids=torch.tensor([0, 0, 1, 1]),
        )  # fmt: skip

    torch.testing.assert_close(guided(1.0)[:2], cond, rtol=1e-4, atol=1e-5)
    expected = uncond + 3.0 * (cond - uncond)
    torch.testing.assert_close(guided(3.0)[:2], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="caption dropout"):
        tiny(caption_dropout_prob=0.0).forward_with_cfg(x, t, y, 2.0)


def test_pooled_caption_is_the_masked_mean_added_to_the_timestep_embedding():
    model = tiny(caption_channels=2, max_length=3)
    caption = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]]
    )
    mask = torch.tensor([[True, True, False], [False, False, False]])
    pooled = model.pooled(caption, mask)
    # row 0: mean of its two tokens; row 1: empty, so the mean of all three
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 3.0], [1.0, 1.0]]))
    # the embedding every ResBlock gets: the timestep's plus pool_proj of that mean
    seen = []
    model.input_blocks[1][0].emb_layers.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    t = torch.tensor([10, 500])
    model(torch.randn(2, 2, 8, 8), t, caption, mask)
    expected = model._embed(t, None, None) + model.pool_proj(torch.tensor([[2.0, 3.0], [1.0, 1.0]]))
    torch.testing.assert_close(seen[0], expected)


def test_pixel_patches_keep_the_image_interface():
    model = tiny(image_size=16, patch_size=2)
    assert (model.in_channels, model.out_channels, model.guided_channels) == (2, 4, 2)
    assert model.input_blocks[0][0].in_channels == 8  # 2 channels x 2 x 2 pixels
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 16, 16, generator=g)
    out = model(x, torch.tensor([1, 2]), torch.randn(2, 5, 12, generator=g))
    assert out.shape == (2, 4, 16, 16)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 2, 14, 14), torch.tensor([1]))
    with pytest.raises(ValueError, match="patch_size"):
        tiny(image_size=9, patch_size=2)


def test_norm_groups_reach_the_spatial_transformers():
    model = tiny(model_channels=16, num_head_channels=8, norm_groups=4)
    blocks = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
    assert blocks and all(b.norm.num_groups == 4 for b in blocks)
    out = model(*inputs())
    assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()


def test_shard_units_and_gradient_checkpointing():
    model = tiny()
    units = model.shard_units()
    kinds = [type(u) for u in units]
    # encoder: 2 ResBlocks + 2 transformers; middle: 2 + 1; decoder: 4 + 4
    assert kinds.count(ResBlock) == 8 and kinds.count(SpatialTransformer) == 7
    assert len(units) == 15
    x, t, y, mask = inputs()

    def grads(checkpointing):
        model.grad_checkpointing = checkpointing
        model.train().zero_grad()
        model(x, t, y, mask, force_drop_ids=torch.zeros(3)).square().mean().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b)


def test_faster_variant_keeps_the_unet():
    unet = load_config(str(CONFIGS / "unet.yaml"), "train", [])
    faster = load_config(str(CONFIGS / "unet_faster.yaml"), "train", [])
    assert faster.diffusion.faster is True and not unet.diffusion.get("faster")
    assert dict(faster.model) == dict(unet.model)
    assert unet.model._target_ == "speed.models.TextUNet"
    assert faster.optimizer.lr == unet.optimizer.lr


def test_the_demo_config_is_unet_full_with_released_speed():
    full = load_config(str(CONFIGS / "unet_full.yaml"), "train", [])
    demo = load_config(str(CONFIGS / "demo.yaml"), "train", [])
    assert dict(demo.model) == dict(full.model) and demo.optimizer.lr == full.optimizer.lr
    assert (demo.diffusion.sampling, demo.diffusion.weighting) == ("tanh", "p2")
    assert full.diffusion.get("sampling") is None and not full.diffusion.faster  # uniform t
    assert demo.max_training_steps == 1200


def test_demo_unet_trains_resumes_exactly_and_samples_prompts(
    tmp_path, tiny_overrides, single_thread
):
    config = str(CONFIGS / "unet.yaml")

    def overrides(run, steps):
        return tiny_overrides(run, steps) + TINY_UNET

    straight = train(load_config(config, "train", overrides(tmp_path / "a", 3)))
    train(load_config(config, "train", overrides(tmp_path / "b", 2)))
    resumed = train(load_config(config, "train", overrides(tmp_path / "b", 3) + ["resume=true"]))
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert "text_encoder.token_embedding.weight" in a["model"] and "y_embedding" in a["model"]
    assert a["model"]["pool_proj.weight"].shape == (128, 16)  # caption width from text_encoder
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"

    prompts = ["a cat left of a zebra", "a dog left of a horse"]
    args = overrides(tmp_path / "a", 3) + [f"prompts={json.dumps(prompts)}", "num_sample_seeds=2"]
    grid = sample(load_config(config, "sample", args))
    picture = np.asarray(Image.open(grid))
    assert picture.shape[0] == 2 * 56 + 3 * 2  # one row of 56 px tiles per prompt
    assert json.loads(grid.with_suffix(".json").read_text())["prompts"] == prompts


def test_bf16_step_is_finite(tmp_path, tiny_overrides, single_thread):
    args = tiny_overrides(tmp_path / "run", 1) + TINY_UNET + ["precision=bf16", "sample_every=0"]
    state = load_checkpoint(train(load_config(str(CONFIGS / "unet.yaml"), "train", args)))
    assert all(torch.isfinite(t).all() for t in state["model"].values())
