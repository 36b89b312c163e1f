"""Config -> optimizer: fused kernels by default, the config's own choice kept."""

import torch
from torch import nn

from speed.config import load_config
from speed.runners.build import build_optimizer, fused_kwargs

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
