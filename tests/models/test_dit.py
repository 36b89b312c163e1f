"""DiT: sizes, official keys and parameter counts, numerics against the paper's equations written
out in float64, adaLN-Zero init, guidance, options (unconditional, non-square, grayscale,
gradient checkpointing)."""

import math

import pytest
import torch
import torch.nn.functional as F

from speed.models import DiT, DiT_models, build_dit

TINY = dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=4, num_classes=5)


def tiny_dit(**overrides) -> DiT:
    return DiT(**{**TINY, **overrides})


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Random N(0, std^2) weights everywhere (adaLN-Zero would otherwise hide most of the
    network)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def analytic_param_count(depth, hidden, patch, input_size=32, in_ch=4, num_classes=1000):
    """Parameters of a DiT from its layers (learn_sigma, label dropout), pos_embed included."""
    tokens, out_ch, mlp = (input_size // patch) ** 2, 2 * in_ch, 4 * hidden
    count = hidden * in_ch * patch * patch + hidden  # patch embedding conv
    count += tokens * hidden  # fixed sin-cos pos_embed (a frozen parameter)
    count += 256 * hidden + hidden + hidden * hidden + hidden  # timestep MLP
    count += (num_classes + 1) * hidden  # label table with the null label
    block = (hidden * 3 * hidden + 3 * hidden) + (hidden * hidden + hidden)  # qkv, proj
    block += (hidden * mlp + mlp) + (mlp * hidden + hidden)  # MLP
    block += hidden * 6 * hidden + 6 * hidden  # adaLN modulation
    count += depth * block
    count += hidden * patch * patch * out_ch + patch * patch * out_ch  # final linear
    count += hidden * 2 * hidden + 2 * hidden  # final adaLN modulation
    return count


# DiT paper, Table 1 (millions of parameters), with the depth, width and heads of its models.py.
@pytest.mark.parametrize(
    "name, depth, hidden, paper_millions",
    [("DiT-S/2", 12, 384, 33), ("DiT-B/2", 12, 768, 130), ("DiT-L/2", 24, 1024, 458),
     ("DiT-XL/2", 28, 1152, 675)],
)  # fmt: skip
def test_param_counts_match_architecture_and_paper(name, depth, hidden, paper_millions):
    with torch.device("meta"):
        model = DiT_models[name]()
    count = sum(p.numel() for p in model.parameters())
    assert count == analytic_param_count(depth, hidden, patch=2)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == count - model.pos_embed.numel()
    assert round(trainable / 1e6) == paper_millions  # the paper counts trainable parameters


def test_registry_has_the_twelve_paper_models():
    sizes = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
    expected = {f"DiT-{s}/{p}" for s in sizes for p in (2, 4, 8)}
    assert set(DiT_models) == expected
    for name in expected:
        size, patch = name[4:].split("/")
        with torch.device("meta"):
            model = DiT_models[name](input_size=32)
        depth, hidden, heads = sizes[size]
        assert len(model.blocks) == depth
        assert model.blocks[0].attn.num_heads == heads
        assert model.pos_embed.shape == (1, (32 // int(patch)) ** 2, hidden)


def test_state_dict_keys_are_the_official_names():
    model = tiny_dit()
    keys = set(model.state_dict())
    expected = {"pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias"}
    expected |= {f"t_embedder.mlp.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    expected |= {"y_embedder.embedding_table.weight"}
    for i in range(TINY["depth"]):
        for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"):
            expected |= {f"blocks.{i}.{layer}.weight", f"blocks.{i}.{layer}.bias"}
    for layer in ("linear", "adaLN_modulation.1"):
        expected |= {f"final_layer.{layer}.weight", f"final_layer.{layer}.bias"}
    assert keys == expected
    assert model.y_embedder.embedding_table.weight.shape == (TINY["num_classes"] + 1, 32)
    assert not model.pos_embed.requires_grad


def test_fresh_model_outputs_exactly_zero_and_pos_embed_is_sincos():
    model = tiny_dit(learn_sigma=True)
    out = model(torch.randn(3, 4, 8, 8), torch.tensor([0, 10, 999]), torch.tensor([0, 1, 4]))
    assert out.shape == (3, 8, 8, 8)
    assert torch.count_nonzero(out) == 0
    # pos_embed[token (i, j), k] for k < dim/4 is sin(column j * omega_0) with omega_0 = 1.
    grid = model.pos_embed[0].reshape(4, 4, 32)
    torch.testing.assert_close(grid[2, 3, 0], torch.tensor(math.sin(3.0)))
    torch.testing.assert_close(grid[2, 3, 16], torch.tensor(math.sin(2.0)))


def reference_forward(sd, x, t, y, patch, heads, out_ch):
    """DiT's equations in float64 from the state-dict tensors alone."""
    n, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    # Patchify: each token is the (C, p, p) block of its patch, embedded by the conv weights.
    patches = x.reshape(n, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, gh * gw, c * patch * patch)
    weight = sd["x_embedder.proj.weight"].reshape(sd["x_embedder.proj.weight"].shape[0], -1)
    tokens = patches @ weight.T + sd["x_embedder.proj.bias"] + sd["pos_embed"]
    # Timestep: [cos, sin] of t * 10000^(-i/128) (float32, as the official model computes it),
    # then Linear-SiLU-Linear; plus the label row.
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t.float()[:, None] * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], dim=1).double()
    temb = F.silu(temb @ sd["t_embedder.mlp.0.weight"].T + sd["t_embedder.mlp.0.bias"])
    cond = temb @ sd["t_embedder.mlp.2.weight"].T + sd["t_embedder.mlp.2.bias"]
    cond = cond + sd["y_embedder.embedding_table.weight"][y]

    def linear(v, name):
        return v @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def layer_norm(v):
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)
        return (v - mean) / torch.sqrt(var + 1e-6)

    def gelu_tanh(v):
        return 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    dim = tokens.shape[-1]
    for i in range(depth):
        mod = linear(F.silu(cond), f"blocks.{i}.adaLN_modulation.1").chunk(6, dim=1)
        sh1, sc1, g1, sh2, sc2, g2 = (m[:, None, :] for m in mod)
        a = layer_norm(tokens) * (1 + sc1) + sh1
        q, k, v = linear(a, f"blocks.{i}.attn.qkv").split(dim, dim=-1)
        split = lambda z: z.reshape(n, -1, heads, dim // heads).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), dim=-1) @ v
        attn = attn.transpose(1, 2).reshape(n, -1, dim)
        tokens = tokens + g1 * linear(attn, f"blocks.{i}.attn.proj")
        m = layer_norm(tokens) * (1 + sc2) + sh2
        m = linear(gelu_tanh(linear(m, f"blocks.{i}.mlp.fc1")), f"blocks.{i}.mlp.fc2")
        tokens = tokens + g2 * m
    shift, scale = linear(F.silu(cond), "final_layer.adaLN_modulation.1").chunk(2, dim=1)
    tokens = layer_norm(tokens) * (1 + scale[:, None]) + shift[:, None]
    tokens = linear(tokens, "final_layer.linear")  # [N, T, p * p * C_out], (p, q, c) order
    out = tokens.reshape(n, gh, gw, patch, patch, out_ch).permute(0, 5, 1, 3, 2, 4)
    return out.reshape(n, out_ch, h, w)


@pytest.mark.parametrize("input_size", [8, (4, 8)])
def test_forward_matches_the_equations(input_size):
    model = randomize_(tiny_dit(input_size=input_size)).double().eval()
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    x = torch.randn(2, 4, h, w, dtype=torch.float64)
    t, y = torch.tensor([3, 700]), torch.tensor([1, 5])  # 5 = the null label
    got = model(x, t, y)
    sd = model.state_dict()
    expected = reference_forward(sd, x, t, y, patch=2, heads=4, out_ch=8)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_sdpa_equals_explicit_attention():
    model = randomize_(tiny_dit(), std=0.1).eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 3])
    fused = model(x, t, y)
    for block in model.blocks:
        block.attn.fused = False
    torch.testing.assert_close(fused, model(x, t, y), atol=1e-5, rtol=0)


def test_state_dict_round_trip_gives_identical_outputs(tmp_path):
    model = randomize_(tiny_dit(), seed=3).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = tiny_dit().eval()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt"), strict=True)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([5, 6]), torch.tensor([2, 2])
    assert torch.equal(model(x, t, y), fresh(x, t, y))


@pytest.mark.parametrize("cfg_channels, guided", [(3, 3), ("all", 4)])
def test_forward_with_cfg(cfg_channels, guided):
    model = randomize_(tiny_dit(cfg_channels=cfg_channels)).double().eval()
    x_half = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    x, t = torch.cat([x_half, x_half]), torch.tensor([10, 20, 10, 20])
    y = torch.tensor([1, 2, 5, 5])
    cond, uncond = model(x_half, t[:2], y[:2]), model(x_half, t[:2], y[2:])
    out1 = model.forward_with_cfg(x, t, y, 1.0)
    torch.testing.assert_close(out1[:2, :guided], cond[:, :guided])
    out = model.forward_with_cfg(x, t, y, 2.5)
    expected = uncond[:, :guided] + 2.5 * (cond[:, :guided] - uncond[:, :guided])
    torch.testing.assert_close(out[2:, :guided], expected)
    torch.testing.assert_close(out[:2, guided:], cond[:, guided:])  # incl. the variance channels


def test_label_dropout_in_training_only():
    model = randomize_(tiny_dit(class_dropout_prob=1.0)).double()
    x, t = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.tensor([1, 2])
    null = torch.tensor([5, 5])
    model.train()
    torch.testing.assert_close(model(x, t, torch.tensor([0, 3])), model(x, t, null))
    model.eval()
    assert not torch.allclose(model(x, t, torch.tensor([0, 3])), model(x, t, null))
    torch.testing.assert_close(model(x, t, None), model(x, t, null))  # y=None: the null label


def test_unconditional_mode():
    model = randomize_(tiny_dit(num_classes=0)).eval()
    assert model.y_embedder is None
    assert not any(k.startswith("y_embedder") for k in model.state_dict())
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    assert torch.equal(model(x, t, torch.tensor([0, 1])), model(x, t, None))
    with pytest.raises(ValueError, match="class-conditional"):
        model.forward_with_cfg(torch.cat([x, x]), torch.cat([t, t]), torch.zeros(4).long(), 2.0)


def test_grayscale_input_and_no_learned_sigma():
    model = tiny_dit(in_channels=1, learn_sigma=False)
    assert (model.in_channels, model.out_channels, model.guided_channels) == (1, 1, 1)
    assert model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1])).shape == (
        2, 1, 8, 8,
    )  # fmt: skip


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 900]), torch.tensor([0, 4])
    grads, losses, keys = [], [], []
    for flag in (False, True):
        model = randomize_(tiny_dit(grad_checkpointing=flag, class_dropout_prob=0.0)).train()
        loss = model(x, t, y).square().sum()
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        losses.append(loss.detach())
        keys.append(list(model.state_dict()))
    assert keys[0] == keys[1] and grads[0].keys() == grads[1].keys()
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_build_dit_by_name_with_overrides():
    model = build_dit("DiT-S/4", input_size=28, in_channels=1, num_classes=10, depth=2)
    assert (len(model.blocks), model.patch_size, model.pos_embed.shape[-1]) == (2, 4, 384)
    assert model.blocks[0].attn.num_heads == 6
    with pytest.raises(ValueError, match="DiT-S/2"):
        build_dit("DiT-M/2")


def test_bad_inputs_fail_with_clear_errors():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        tiny_dit(input_size=9)
    with pytest.raises(ValueError, match="num_heads"):
        tiny_dit(num_heads=5)
    model = tiny_dit()
    with pytest.raises(ValueError, match=r"expects input \[N, 4, 8, 8\]"):
        model(torch.randn(1, 4, 16, 16), torch.tensor([1]), torch.tensor([0]))
