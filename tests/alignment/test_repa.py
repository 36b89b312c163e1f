"""REPA: the loss against its formula on fixed tensors, the projector, encoders loaded from local
files (a tiny timm ViT saved and loaded through the real path; the committed domain
classifier), and the alignment's hook and gradients on a DiT."""

import pytest
import torch
import torch.nn.functional as F

from speed.alignment import NoAlignment, build_alignment
from speed.alignment.encoders import DomainEncoder, TimmEncoder
from speed.alignment.repa import build_projector, match_grid, negative_cosine
from speed.models.dit import DiT


def test_loss_is_repas_formula_on_fixed_tensors():
    """REPA's loss.py: sum over samples of mean_flat(-(z_j . z~_j)) with both normalised, divided
    by the batch size; ours is per sample, so its batch mean is REPA's value."""
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 4.0], [1.0, 1.0]]])
    z_tilde = torch.tensor([[[1.0, 1.0], [0.0, -1.0]], [[3.0, 4.0], [-1.0, 1.0]]])
    s = 2**-0.5
    expected = torch.tensor([-(s + -1.0) / 2, -(1.0 + 0.0) / 2])
    torch.testing.assert_close(negative_cosine(z_tilde, z), expected)
    repa = (
        sum(
            (-(F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)).mean()
            for a, b in zip(z, z_tilde)
        )
        / 2
    )
    torch.testing.assert_close(negative_cosine(z_tilde, z).mean(), repa)


def test_projector_is_three_linears_with_silu():
    layers = build_projector(8, 16, 4)
    assert [type(m).__name__ for m in layers] == ["Linear", "SiLU", "Linear", "SiLU", "Linear"]
    assert (layers[0].in_features, layers[2].in_features, layers[4].out_features) == (8, 16, 4)


def test_match_grid_resizes_square_grids_and_refuses_others():
    tokens = torch.arange(16.0).reshape(1, 16, 1)
    assert match_grid(tokens, 16) is tokens
    assert match_grid(tokens, 4).shape == (1, 4, 1)
    with pytest.raises(ValueError, match="square grids"):
        match_grid(torch.zeros(1, 6, 1), 4)


@pytest.fixture
def tiny_vit(tmp_path):
    """A 1-block DINOv2-shaped ViT (patch 14, 4 register tokens) saved as a state dict."""
    import timm

    kwargs = dict(img_size=28, depth=1, embed_dim=24, num_heads=2)
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, **kwargs
    )
    path = tmp_path / "vit.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path, kwargs


def test_timm_encoder_loads_a_local_file_and_returns_patch_tokens(tiny_vit):
    model, path, kwargs = tiny_vit
    encoder = TimmEncoder("vit_small_patch14_reg4_dinov2", str(path), resolution=28, **kwargs)
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    tokens = encoder(images)
    assert tokens.shape == (3, 4, 24) and encoder.feature_dim == 24  # 2 x 2 patches of 14
    x = ((images + 1) / 2).expand(-1, 3, -1, -1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.forward_features((x - mean) / std)[:, 5:]  # class + 4 registers dropped
    torch.testing.assert_close(tokens, expected)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_a_missing_encoder_file_names_the_key(tmp_path):
    from speed.errors import MissingFileError

    with pytest.raises(MissingFileError, match="repa.encoder.path"):
        TimmEncoder("vit_small_patch14_dinov2", str(tmp_path / "none.pth"))


def test_domain_encoder_is_the_committed_classifiers_block_two():
    encoder = DomainEncoder()
    tokens = encoder(torch.zeros(2, 1, 28, 28))
    assert tokens.shape == (2, 49, 64) and encoder.feature_dim == 64


def tiny_dit():
    return DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=2, num_heads=2,
               num_classes=3, learn_sigma=False)  # fmt: skip


class FixedEncoder(torch.nn.Module):
    feature_dim, name = 5, "fixed"

    def forward(self, images):
        return images.flatten(1)[:, :80].reshape(-1, 16, 5)


def test_alignment_hooks_the_block_and_trains_the_projector():
    model = tiny_dit()
    example = (torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    assert isinstance(build_alignment(0.0, model=model, example=example), NoAlignment)
    align = build_alignment(0.5, "blocks.0", 32, FixedEncoder(), model=model, example=example)
    assert align.projector[0].in_features == 16
    seen = []
    model.blocks[0].register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    x = torch.randn(2, 1, 8, 8)
    targets = align.targets(torch.randn(2, 1, 10, 10))
    model(x, torch.tensor([10.0, 500.0]), torch.tensor([0, 2]))
    loss = align.loss(targets)
    assert seen[0].shape == (2, 16, 16)  # 4 x 4 patches of width 16
    expected = 0.5 * negative_cosine(align.projector(seen[0]), targets)
    torch.testing.assert_close(loss, expected)
    loss.mean().backward()
    assert align.projector[0].weight.grad.abs().sum() > 0
    # adaLN-Zero starts with closed gates: the gradient reaches the gates and the patch embedding
    assert model.blocks[0].adaLN_modulation[1].weight.grad.abs().sum() > 0
    assert model.x_embedder.proj.weight.grad.abs().sum() > 0
    assert model.blocks[1].adaLN_modulation[1].weight.grad is None  # after the aligned block
    with pytest.raises(ValueError, match="no module 'blocks.9'"):
        build_alignment(0.5, "blocks.9", 32, FixedEncoder(), model=model, example=example)


def test_a_masked_backbone_is_refused():
    from speed.models.maskdit import MaskDiT

    model = MaskDiT(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=2,
                    num_heads=2, decoder_hidden_size=16, decoder_depth=1, decoder_num_heads=2,
                    num_classes=3, learn_sigma=False)  # fmt: skip
    example = (torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="MaskDiT trains on a subset of its tokens"):
        build_alignment(0.5, "blocks.0", 32, FixedEncoder(), model=model, example=example)
