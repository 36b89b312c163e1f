"""EMA update against its formula."""

import torch

from speed.utils.ema import make_ema, update_ema


def test_ema_update_equals_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = make_ema(model)
    before = {k: v.clone().double() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[1].running_mean.fill_(0.5)
    decay = 0.9
    update_ema(ema, model, decay)
    for name, p in model.named_parameters():
        expected = decay * before[name] + (1 - decay) * p.detach().double()
        assert torch.allclose(ema.state_dict()[name].double(), expected, atol=1e-6)
    assert torch.equal(ema.state_dict()["1.running_mean"], torch.full((3,), 0.5))
    assert all(not p.requires_grad for p in ema.parameters())


def test_ema_is_float32_for_half_models():
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    ema = make_ema(model)
    assert all(p.dtype == torch.float32 for p in ema.parameters())
    update_ema(ema, model, 0.5)
