"""Config -> objects: fused optimizer kernels by default (the config's own choice kept), and the
sampling model, compiled when asked."""

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from speed.autoencoders import Identity
from speed.config import load_config
from speed.diffusion import create_diffusion
from speed.generation import generate
from speed.runners.build import (
    DataSpec,
    build_model,
    build_optimizer,
    build_sampling_model,
    fused_kwargs,
)

CPU = torch.device("cpu")


def test_adamw_is_fused_on_cpu_unless_the_config_says_otherwise(demo_config):
    model = nn.Linear(3, 2)
    default = build_optimizer(load_config(demo_config, "train", []), model, CPU)
    assert isinstance(default, torch.optim.AdamW) and default.defaults["fused"] is True
    cfg = load_config(demo_config, "train", ["optimizer.fused=false"])
    assert build_optimizer(cfg, model, CPU).defaults["fused"] is False
    assert fused_kwargs(torch.optim.RAdam, CPU) == {}  # no fused kernel: not asked for one


def test_fused_adamw_steps_like_the_foreach_path():
    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(3)]
    results = []
    for fused in (False, True):
        params = [nn.Parameter(w.clone()) for w in weights]
        optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=fused)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            optimizer.step()
        results.append([p.detach() for p in params])
    for start, foreach, fused in zip(weights, *results):
        assert (foreach - start).abs().mean() > 5e-3  # the weights moved (3 steps of lr 1e-2)
        torch.testing.assert_close(fused, foreach, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_a_compiled_sampling_model_gives_the_eager_images(tmp_path, dit_config, tiny_dit):
    torch.manual_seed(0)
    words = [*tiny_dit, f"ckpt_path={tmp_path / 'weights.pt'}"]
    eager_cfg = load_config(dit_config, "sample", words)
    spec = DataSpec(channels=1, side=28, num_classes=10)
    weights = build_model(eager_cfg, spec).state_dict()
    for value in weights.values():  # adaLN-Zero starts at zero: give the output something to do
        value.add_(0.05 * torch.randn_like(value))
    torch.save(weights, tmp_path / "weights.pt")
    eager, _, _ = build_sampling_model(eager_cfg, Identity(), CPU)
    compiled_cfg = load_config(dit_config, "sample", [*words, "compile=true"])
    compiled, _, _ = build_sampling_model(compiled_cfg, Identity(), CPU)
    assert compiled.state_dict().keys() == weights.keys()  # no torch.compile prefix
    diffusion = create_diffusion("", learn_sigma=False)
    noise = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3])
    torch._dynamo.reset()
    counters.clear()
    for scale in (1.0, 2.0):  # the plain forward, and forward_with_cfg calling the model
        images = [
            generate(
                model,
                diffusion,
                Identity(),
                noise,
                labels,
                sampler="ddim",
                num_steps=3,
                guidance_scale=scale,
                precision=precision,
            )  # fmt: skip
            for model, precision in ((eager, "fp32"), (compiled, "fp32"), (compiled, "bf16"))
        ]
        torch.testing.assert_close(images[1], images[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(images[2], images[0], atol=0.1, rtol=0)
    assert counters["stats"]["unique_graphs"] >= 2  # guided and bf16 calls ran compiled graphs
