"""ControlNet for the DiT (PixArt design) and the UNet (ControlNet's copied encoder): at
initialisation the controlled model is the base exactly, scale 0 is the base, the base is frozen
and gradients reach the control branch, FSDP shards the base's blocks and the branch's copies one
by one; control transforms on a drawn silhouette."""

import pytest
import torch

from speed.control import ControlledModel, DiTControlBranch, UNetControlBranch, build_transform
from speed.models import UNetModel
from speed.models.dit import build_dit


def trained_looking(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def dit_pair():
    torch.manual_seed(0)
    base = trained_looking(
        build_dit(
            "DiT-S/4",
            input_size=8,
            in_channels=1,
            num_classes=3,
            hidden_size=32,
            depth=3,
            num_heads=2,
        )  # fmt: skip
    )
    return base, DiTControlBranch(base, num_blocks=2)


def unet_pair():
    torch.manual_seed(0)
    base = UNetModel(
        image_size=8, in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1,
        attention_resolutions=[2], channel_mult=[1, 2], num_head_channels=32, num_classes=3,
    )  # fmt: skip
    base = trained_looking(base)
    return base, UNetControlBranch(base, control_channels=1)


def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 8, 8, generator=g)
    control = torch.randn(4, 1, 8, 8, generator=g).sign()
    return x, torch.tensor([1.0, 50, 500, 999]), torch.arange(4) % 3, control


def wake(branch):
    """Give the zero-initialised layers values, as training would."""
    trained_looking(branch, seed=9)


@pytest.mark.parametrize("pair", [dit_pair, unet_pair])
def test_at_initialisation_the_output_is_the_base_exactly(pair):
    base, branch = pair()
    x, t, y, control = inputs()
    model = ControlledModel(base, branch).eval()
    with torch.no_grad():
        assert torch.equal(model(x, t, y, control=control), base(x, t, y))


@pytest.mark.parametrize("pair", [dit_pair, unet_pair])
def test_scale_zero_is_the_base_and_a_trained_branch_changes_the_output(pair):
    base, branch = pair()
    wake(branch)
    x, t, y, control = inputs()
    with torch.no_grad():
        expected = base.eval()(x, t, y)
        assert torch.equal(ControlledModel(base, branch, scale=0.0)(x, t, y, control=control),
                           expected)  # fmt: skip
        out = ControlledModel(base, branch, scale=1.0)(x, t, y, control=control)
        half = ControlledModel(base, branch, scale=0.5)(x, t, y, control=control)
    assert (out - expected).abs().max() > 1e-3
    assert not torch.allclose(half, out)
    assert torch.equal(base(x, t, y), expected)  # the hooks are gone after the pass


@pytest.mark.parametrize("pair", [dit_pair, unet_pair])
def test_gradients_reach_the_branch_and_not_the_base(pair):
    base, branch = pair()
    model = ControlledModel(base, branch).train()
    x, t, y, control = inputs()
    model(x, t, y, control=control).square().mean().backward()
    assert all(p.grad is None for p in base.parameters())
    zero_layers = [n for n, p in branch.named_parameters() if p.grad is not None and p.grad.any()]
    assert zero_layers  # the zero projections get gradients at once
    model.zero_grad()
    wake(branch)  # once they are non-zero, the copied blocks learn too
    model(x, t, y, control=control).square().mean().backward()
    copies = branch.blocks if isinstance(branch, DiTControlBranch) else branch.input_blocks
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in copies.parameters())


@pytest.mark.parametrize("pair", [dit_pair, unet_pair])
def test_fsdp_units_are_the_base_blocks_and_the_branch_copies(pair):
    base, branch = pair()
    units = ControlledModel(base, branch).shard_units()
    copies = [m for m in branch.modules() if isinstance(m, base.shard_unit_types)]
    assert copies and units == base.shard_units() + copies


def test_edges_of_a_square_silhouette_are_its_outline():
    x = -torch.ones(1, 1, 8, 8)
    x[..., 2:6, 2:6] = 1.0
    edges = build_transform("edges")(x)[0, 0] > 0
    mask = build_transform("mask")(x)[0, 0] > 0
    assert mask.sum() == 16
    ring = torch.zeros(8, 8, dtype=torch.bool)
    ring[1:7, 1:7] = True
    ring[3:5, 3:5] = False  # Sobel: pixels next to the outline on either side, corners included
    assert torch.equal(edges, ring)


def test_low_res_keeps_what_the_low_resolution_holds():
    x = torch.full((1, 1, 8, 8), 0.25)
    torch.testing.assert_close(build_transform("low_res", factor=2)(x), x)
    ramp = torch.linspace(-1, 1, 8).repeat(1, 1, 8, 1)
    low = torch.nn.functional.avg_pool2d(build_transform("low_res", factor=4)(ramp), 4)
    assert (low - torch.nn.functional.avg_pool2d(ramp, 4)).abs().max() < 0.1
    with pytest.raises(ValueError, match="known"):
        build_transform("canny")
