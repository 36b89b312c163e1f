"""Classifier-free guidance math and label dropout, with a known stand-in model."""

import pytest
import torch

from speed.models.guidance import drop_labels, forward_with_cfg, guided_channel_count


def fake_forward(x, t, y):
    """out[:, c] = x[:, c] * (c + 1) + y (broadcast): a simple function of x and the label."""
    scale = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1, 1)
    return x * scale + y.to(x.dtype).view(-1, 1, 1, 1)


def test_cfg_mixes_guided_channels_and_passes_the_rest():
    x_half = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    x = torch.cat([x_half, torch.randn_like(x_half)])  # the second half must be ignored
    y = torch.tensor([3, 5, 10, 10])  # cond labels, then the null label 10
    t = torch.zeros(4)
    s = 4.0
    out = forward_with_cfg(fake_forward, x, t, y, s, guided_channels=3)
    cond = fake_forward(x_half, t[:2], y[:2])
    uncond = fake_forward(x_half, t[:2], y[2:])
    expected_guided = uncond[:, :3] + s * (cond[:, :3] - uncond[:, :3])
    for half in (out[:2], out[2:]):
        torch.testing.assert_close(half[:, :3], expected_guided)
    # The unguided channel passes through from each half's own forward.
    torch.testing.assert_close(out[:2, 3:], cond[:, 3:])
    torch.testing.assert_close(out[2:, 3:], uncond[:, 3:])


def test_cfg_scale_one_is_conditional():
    x_half = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    x = torch.cat([x_half, x_half])
    y = torch.tensor([0, 1, 2, 7, 7, 7])
    out = forward_with_cfg(fake_forward, x, torch.zeros(6), y, 1.0, guided_channels=2)
    torch.testing.assert_close(out[:3], fake_forward(x_half, None, y[:3]))


def test_cfg_rejects_odd_batch():
    with pytest.raises(ValueError, match="even batch"):
        forward_with_cfg(
            fake_forward, torch.zeros(3, 1, 2, 2), torch.zeros(3), torch.zeros(3), 2, 1
        )


def test_guided_channel_count():
    assert guided_channel_count(3, 4) == 3
    assert guided_channel_count("all", 4) == 4
    assert guided_channel_count(3, 1) == 1  # never more than the input channels
    for bad in (0, -1, "some", 2.0, True):
        with pytest.raises(ValueError, match="cfg_channels"):
            guided_channel_count(bad, 4)


def test_drop_labels_forced_and_random():
    labels = torch.arange(6)
    forced = drop_labels(labels, 10, 0.0, force_drop_ids=torch.tensor([1, 0, 1, 0, 0, 1]))
    assert forced.tolist() == [10, 1, 10, 3, 4, 10]
    assert drop_labels(labels, 10, 0.0).tolist() == labels.tolist()
    assert drop_labels(labels, 10, 1.0).tolist() == [10] * 6
    torch.manual_seed(0)
    many = drop_labels(torch.zeros(20000, dtype=torch.long), 1, 0.1)
    rate = (many == 1).double().mean().item()
    assert abs(rate - 0.1) < 4 * (0.1 * 0.9 / 20000) ** 0.5
