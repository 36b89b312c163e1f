"""The extra graph inputs: their manifest entries and the random values the export's check
feeds them (shapes, dtypes, ranges)."""

from types import SimpleNamespace

import torch

from speed.control import ControlNet
from speed.deploy.conditions import caption_inputs, control_input, low_res_input
from speed.text import ByteTokens, WordTokens


def test_byte_ids_and_mask():
    y, mask = caption_inputs(ByteTokens(max_length=12), {"_target_": "speed.text.ByteTokens"})
    assert y.describe()["shape"] == ["N", 12] and y.dtype == "int64" and y.caption
    assert mask.describe() == {
        "name": "mask", "shape": ["N", 12], "dtype": "bool",
        "what": "caption token mask: True where y holds a token",
        "text_encoder": {"_target_": "speed.text.ByteTokens"},
    }  # fmt: skip
    g = torch.Generator().manual_seed(0)
    ids, on = y.example(64, g), mask.example(64, g)
    assert ids.dtype == torch.long and 1 <= ids.min() and ids.max() <= 256  # byte b -> b + 1
    assert ids.max() > 200  # spread over the bytes
    assert on.dtype == torch.bool and on[:, 0].all() and 0.3 < on[:, 1:].float().mean() < 0.7


def test_word_ids_name_their_hashing():
    node = {"_target_": "speed.text.WordTokens"}
    y, _ = caption_inputs(WordTokens(max_length=8, buckets=64), node)
    assert y.describe()["shape"] == ["N", 8] and "1 + crc32(utf-8 w) mod buckets" in y.about["what"]
    ids = y.example(64, torch.Generator().manual_seed(0))
    assert 1 <= ids.min() and ids.max() <= 64  # ids 1..buckets, 0 is padding


def test_frozen_encoder_embeddings():
    encoder = SimpleNamespace(max_length=6, dim=16, vocab_size=0)
    node = {"_target_": "speed.text.T5TextEncoder", "path": "t5", "max_length": 6}
    y, _ = caption_inputs(encoder, node)
    entry = y.describe()
    assert (entry["shape"], entry["dtype"], entry["text_encoder"]) == (
        ["N", 6, 16],
        "float32",
        node,
    )
    values = y.example(256, torch.Generator().manual_seed(0))
    assert values.shape == (256, 6, 16) and abs(values.std().item() - 1) < 0.05


def test_control_and_low_res_entries(tmp_path):
    control = ControlNet("dit", tmp_path / "base.pt", transform="mask", scale=0.7)
    entry = control_input(control, 4, 8, latent=True).describe()
    assert entry["shape"] == ["N", 4, 8, 8] and entry["transform"] == "mask"
    assert entry["scale"] == 0.7 and "autoencoder" in entry["what"]
    assert "pixel space" in control_input(control, 1, 28, latent=False).describe()["what"]
    model = SimpleNamespace(image_channels=3, upsample_mode="bicubic")
    degradation = {"low_size": 16, "blur_sigma": 0.5, "noise_std": 0.0}
    entry = low_res_input(model, 16, degradation).describe()
    assert entry["shape"] == ["N", 3, 16, 16] and entry["degradation"] == degradation
    assert "bicubic" in entry["what"]
