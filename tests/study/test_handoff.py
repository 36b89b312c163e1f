"""speed/study/handoff.py: the hand-off denoiser calls the model of each timestep's side, and a
hand-off between a model and itself draws exactly the inference phase's images."""

import copy

import numpy as np
import pytest
import torch

from speed.config import load_config
from speed.models import build_dit
from speed.runners.build import build_autoencoder, build_sampling_model
from speed.runners.inference import inference
from speed.runners.train import train
from speed.study import handoff as probe


@pytest.fixture(scope="module")
def two_models():
    """A tiny class-conditional DiT (8x8x1, 3 classes, weights moved off adaLN-Zero's zeros) and
    a copy of it shifted by 0.1."""
    torch.manual_seed(0)
    high = build_dit("DiT-S/4", input_size=8, in_channels=1, num_classes=3, depth=1,
                     hidden_size=32, num_heads=2, learn_sigma=False).eval()  # fmt: skip
    for p in high.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    low = copy.deepcopy(high)
    for p in low.parameters():
        p.data.add_(0.1)
    return high, low


def test_each_timestep_is_denoised_by_the_model_of_its_side(two_models):
    high, low = two_models
    handoff = probe.TimestepHandoff(high, low, switch=300)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        for t in ([300] * 4, [999] * 4, [299] * 4, [0] * 4):
            t = torch.tensor(t)
            expected = (high if t[0] >= 300 else low)(x, t, y)
            assert torch.equal(handoff(x, t, y), expected)
            assert not torch.allclose(expected, (low if t[0] >= 300 else high)(x, t, y))
        mixed = torch.tensor([10, 500, 299, 300])  # a batch across the switch: row by row
        out = handoff(x, mixed, y)
        assert torch.equal(out[[1, 3]], high(x, mixed, y)[[1, 3]])
        assert torch.equal(out[[0, 2]], low(x, mixed, y)[[0, 2]])
        null = torch.full_like(y, high.num_classes)
        pair = torch.cat([x, x]), torch.full((8,), 50), torch.cat([y, null])
        assert torch.equal(handoff.forward_with_cfg(*pair, 2.0), low.forward_with_cfg(*pair, 2.0))


def test_a_model_handed_to_itself_draws_the_inference_phase_images(
    tmp_path, demo_config, tiny_overrides
):
    run = tmp_path / "run"
    words = tiny_overrides(run, steps=1)
    train(load_config(demo_config, "train", [*words, "sample_every=0"]))
    cfg = load_config(demo_config, "inference", words)
    drawn = np.load(inference(cfg))  # 6 images in batches of 4: the second batch is short
    cfg = load_config(
        demo_config, "inference", [*words, f"ckpt_path={run / 'train/checkpoints/0000001.pt'}"]
    )
    model, _, spec = build_sampling_model(cfg, build_autoencoder(cfg), torch.device("cpu"))
    images, labels = probe.handoff_images(cfg, spec, model, model, 500, 6)
    assert images.shape == drawn["arr_0"].shape and images.dtype == np.uint8
    assert np.array_equal(images, drawn["arr_0"])
    assert np.array_equal(labels, drawn["arr_1"])


def test_difference_panel_shows_the_signed_difference_around_mid_grey():
    images = np.array([[[[10, 10, 10]], [[200, 200, 200]]]], dtype=np.uint8)  # [1, 2, 1, 3]
    other = np.array([[[[12, 12, 12]], [[100, 100, 100]]]], dtype=np.uint8)
    panel = probe.difference_panel(images, other, gain=4)
    assert panel.dtype == np.uint8
    assert panel[0, :, 0, 0].tolist() == [120, 255]  # 128 - 4 * 2; 128 + 400 clipped


@pytest.mark.parametrize(
    "words, message",
    [
        (["--pair", "baseline", "baseline"], "--pair takes two different methods"),
        (["--switch", "0"], "--switch takes timesteps between 1 and 999"),
        (["--switch", "100", "1000"], "--switch takes timesteps between 1 and 999"),
    ],
)
def test_a_pair_of_one_model_or_a_switch_outside_the_timesteps_is_refused(words, message, capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(["study.yaml", "--pair", "a", "b", *words])
    assert message in capsys.readouterr().err
