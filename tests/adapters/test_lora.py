"""LoRA on the DiT and the UNet (speed/adapters/lora.py): only the adapters train and are saved,
the adapted layer computes W x + (alpha / r) B A x, it starts as the base, merging changes no
output, and a checkpoint's record is refused over another base."""

import pytest
import torch

from speed.adapters import LoRA, NoAdapter, adapter_of_checkpoint, build_adapter
from speed.errors import ConfigError
from speed.models import UNetModel
from speed.models.dit import build_dit


def trained_looking(model):
    """Move every weight off its initialisation (DiT and ADM zero their output layers, which would
    hide any change the adapters make)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def tiny_dit():
    torch.manual_seed(0)
    dit = build_dit(
        "DiT-S/4", input_size=8, in_channels=1, num_classes=3, hidden_size=32, depth=2, num_heads=2
    )
    return trained_looking(dit)


def tiny_unet():
    torch.manual_seed(0)
    unet = UNetModel(
        image_size=8,
        in_channels=1,
        model_channels=32,
        out_channels=1,
        num_res_blocks=1,
        attention_resolutions=[2],
        channel_mult=[1, 2],
        num_head_channels=32,
        num_classes=3,
    )
    return trained_looking(unet)


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 8, 8, generator=g)
    return x, torch.tensor([1.0, 50, 500, 999]), torch.arange(4) % 3


def base_file(tmp_path, model, name="base.pt"):
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return path


def randomize_b(model):
    """Give every B a non-zero value (it starts at zero), so the adapters change the output."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# DiT: qkv, proj, fc1, fc2 in 2 blocks. UNet: qkv and proj_out in 4 attention blocks (rate 2:
# 1 encoder, 1 middle, 2 decoder) and emb_layers.1 in 8 ResBlocks (2 encoder, 2 middle, 4 decoder).
@pytest.mark.parametrize("make, layers", [(tiny_dit, 4 * 2), (tiny_unet, 2 * 4 + 8)])
def test_only_the_adapters_train_and_are_saved(tmp_path, make, layers):
    model = make()
    adapter = LoRA(rank=2, base=str(base_file(tmp_path, model)))
    adapter.apply(model)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 2 * layers  # A and B of each targeted layer
    assert all("lora_A" in n or "lora_B" in n for n in trained)
    assert sorted(adapter.state_dict(model)) == sorted(trained)
    assert list(adapter.trainable(model)) == [p for p in model.parameters() if p.requires_grad]


def test_adapted_linear_is_w_plus_alpha_over_r_b_a(tmp_path):
    model = tiny_dit()
    w = model.blocks[0].mlp.fc1.weight.detach().clone()
    bias = model.blocks[0].mlp.fc1.bias.detach().clone()
    LoRA(rank=3, alpha=6.0, base=str(base_file(tmp_path, model))).apply(model)
    randomize_b(model)
    layer = model.blocks[0].mlp.fc1
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(5, 32)
    expected = x @ w.T + bias + (6.0 / 3) * (x @ a.T @ b.T)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [tiny_dit, tiny_unet])
def test_at_initialisation_the_adapted_model_is_the_base(tmp_path, make):
    model = make().eval()
    x, t, y = inputs()
    with torch.no_grad():
        before = model(x, t, y)
        LoRA(rank=4, dropout=0.1, base=str(base_file(tmp_path, model))).apply(model)
        assert torch.equal(model(x, t, y), before)  # B = 0


@pytest.mark.parametrize("make", [tiny_dit, tiny_unet])
def test_merged_output_equals_unmerged_and_keys_are_the_backbones(tmp_path, make):
    model = make().eval()
    keys = set(model.state_dict())
    LoRA(rank=4, alpha=8.0, base=str(base_file(tmp_path, model))).apply(model)
    randomize_b(model)
    x, t, y = inputs()
    with torch.no_grad():
        unmerged = model(x, t, y)
        base_out = make().eval()(x, t, y)
        merged_model = LoRA(rank=4, base=str(tmp_path / "base.pt")).merge(model)
        merged = merged_model(x, t, y)
    assert not torch.allclose(unmerged, base_out, atol=1e-4)  # the adapters do something
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert set(merged_model.state_dict()) == keys
    assert not hasattr(merged_model, "peft_config")


def test_wrong_base_is_refused_in_one_line(tmp_path):
    model = tiny_dit()
    trained = LoRA(rank=2, base=str(base_file(tmp_path, model)))
    record = trained.record()
    other = tiny_dit()
    with torch.no_grad():
        other.blocks[0].attn.qkv.weight.add_(1.0)
    wrong = LoRA(rank=2, base=str(base_file(tmp_path, other, "other.pt")))
    with pytest.raises(ConfigError, match=r"set adapter.base to the checkpoint") as error:
        wrong.check(record, "adapter.pt")
    assert "\n" not in str(error.value)
    trained.check(record, "adapter.pt")  # its own base passes
    with pytest.raises(ConfigError, match="rank=2"):
        LoRA(rank=4, base=str(tmp_path / "base.pt")).check(record, "adapter.pt")


def test_adapter_weights_of_another_rank_are_refused(tmp_path):
    model = tiny_dit()
    path = str(base_file(tmp_path, model))
    state = LoRA(rank=2, base=path).state_dict(LoRA(rank=2, base=path).apply(tiny_dit()))
    with pytest.raises(ConfigError, match="adapter.rank=4"):
        adapter = LoRA(rank=4, base=path)
        adapter.load_state_dict(adapter.apply(model), state, "a.pt")
    with pytest.raises(ConfigError, match="does not hold this adapter"):
        adapter.load_state_dict(model, {"blocks.0.attn.qkv.lora_A.default.weight": 0}, "a.pt")


def test_config_errors_name_the_key(tmp_path):
    assert isinstance(build_adapter(rank=0), NoAdapter)
    with pytest.raises(ConfigError, match="adapter.base"):
        build_adapter(rank=4)
    with pytest.raises(ConfigError, match="adapter.dropout"):
        build_adapter(rank=4, dropout=1.5, base="x.pt")
    adapter = LoRA(rank=2, target_modules=r"nothing\.here", base="x.pt")
    with pytest.raises(ConfigError, match="matches no layer"):
        adapter.apply(tiny_dit())


def test_a_checkpoint_names_the_adapter_it_needs(tmp_path):
    path = str(base_file(tmp_path, tiny_dit()))
    record = LoRA(rank=2, alpha=4.0, base=path).record()
    assert isinstance(adapter_of_checkpoint({"model": {}}, NoAdapter()), NoAdapter)
    found = adapter_of_checkpoint({"adapter": record}, NoAdapter())
    assert (found.rank, found.alpha, str(found.base)) == (2, 4.0, path)
    moved = adapter_of_checkpoint({"adapter": record}, LoRA(rank=2, base="/moved/base.pt"))
    assert str(moved.base) == "/moved/base.pt"
