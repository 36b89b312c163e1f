"""ADM's super-resolution UNet: twice the image channels in, the image's channels out, the UNet
applied to [x, bilinear(low_res)], guided-diffusion's keys and the paper's model size."""

import pytest
import torch
import torch.nn.functional as F

from speed.models import SuperResUNet, UNetModel

TINY = dict(
    image_size=16, in_channels=3, model_channels=32, num_res_blocks=1, attention_resolutions=(2,),
    channel_mult=(1, 2), num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
)  # fmt: skip


def randomized(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def inputs(n=2, channels=3, side=16, low=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, side, side, generator=gen)
    low_res = torch.rand(n, channels, low, low, generator=gen) * 2 - 1
    return x, torch.tensor([10, 900]), low_res


@pytest.mark.parametrize("learn_sigma, out", [(False, 3), (True, 6)])
def test_input_channels_are_twice_the_image_channels(learn_sigma, out):
    model = SuperResUNet(**TINY, learn_sigma=learn_sigma)
    assert model.input_blocks[0][0].weight.shape == (32, 6, 3, 3)
    assert model.image_channels == 3 and model.out_channels == out
    x, t, low_res = inputs()
    assert model(x, t, low_res=low_res).shape == (2, out, 16, 16)


def test_equals_the_unet_on_the_bilinear_upsampled_concatenation():
    sr = randomized(SuperResUNet(**TINY))
    plain = UNetModel(**{**TINY, "in_channels": 6, "out_channels": 3})
    assert list(sr.state_dict()) == list(plain.state_dict())  # guided-diffusion's keys
    plain.load_state_dict(sr.state_dict())
    x, t, low_res = inputs()
    up = F.interpolate(low_res, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.equal(sr(x, t, low_res=low_res), plain.eval()(torch.cat([x, up], 1), t))


def test_the_low_res_image_changes_the_output():
    model = randomized(SuperResUNet(**TINY))
    x, t, low_res = inputs()
    with torch.no_grad():
        a = model(x, t, low_res=low_res)
        b = model(x, t, low_res=-low_res)
        c = model(x, t, low_res=low_res.clone())
    assert (a - b).abs().mean() > 1e-3
    assert torch.equal(a, c)


def test_class_conditional_and_missing_low_res():
    model = randomized(SuperResUNet(**TINY, num_classes=4))
    x, t, low_res = inputs()
    with torch.no_grad():
        y0 = model(x, t, torch.tensor([0, 0]), low_res=low_res)
        y1 = model(x, t, torch.tensor([1, 1]), low_res=low_res)
    assert model.label_emb.weight.shape == (4, 128) and not torch.equal(y0, y1)
    with pytest.raises(ValueError, match=r"needs low_res \[N, 3, h, w\]"):
        model(x, t, torch.tensor([0, 0]))


def test_adm_64_to_256_upsampler_size():
    """The README's flags for 64_256_upsampler.pt give the paper's 312M-parameter model."""
    with torch.device("meta"):
        model = SuperResUNet(
            image_size=256, in_channels=3, model_channels=192, num_res_blocks=2,
            attention_resolutions="32,16,8", channel_mult=(1, 1, 2, 2, 4, 4), num_classes=1000,
            num_heads=4, use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True,
        )  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    assert model.input_blocks[0][0].weight.shape == (192, 6, 3, 3)
    assert model.out[-1].weight.shape == (6, 192, 3, 3)
    assert round(params / 1e6) == 312, params
