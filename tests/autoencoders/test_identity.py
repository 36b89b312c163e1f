"""Identity: pixel space."""

import torch

from speed.autoencoders import Identity


def test_identity_returns_its_input_and_reports_pixel_space():
    ae = Identity()
    x = torch.randn(2, 3, 8, 8)
    assert ae.encode(x) is x and ae.decode(x) is x
    assert ae.encode(x, generator=torch.Generator()) is x
    assert (ae.latent_channels, ae.downsample, ae.scale) == (None, 1, 1.0)
    assert isinstance(ae, torch.nn.Module) and ae.to("cpu") is ae
