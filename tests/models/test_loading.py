"""load_pretrained: raw state dicts and training checkpoints, strict loading, one-line errors; and
the builders the runner and configs rely on."""

import argparse
import inspect
import os
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from speed.errors import DataError
from speed.models import (
    DiT,
    UNetModel,
    build_dit,
    describe_state_dict_mismatch,
    load_checkpoint,
    load_pretrained,
)


def small_dit(**overrides):
    return DiT(
        **{**dict(input_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=4), **overrides}
    )


def filled(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def test_raw_state_dict_loads(tmp_path):
    torch.save(filled(small_dit(), 0.25).state_dict(), tmp_path / "raw.pt")
    model = load_pretrained(small_dit(), tmp_path / "raw.pt")
    assert all(torch.all(p == 0.25) for p in model.parameters())


def test_training_checkpoint_takes_ema(tmp_path):
    ckpt = {
        "model": filled(small_dit(), 1.0).state_dict(),
        "ema": filled(small_dit(), 2.0).state_dict(),
        "opt": {"state": {}, "param_groups": []},
        "args": argparse.Namespace(model="DiT-XL/2", image_size=256),  # as DiT's train.py saves
    }
    torch.save(ckpt, tmp_path / "0050000.pt")
    model = load_pretrained(small_dit(), tmp_path / "0050000.pt")
    assert all(torch.all(p == 2.0) for p in model.parameters())
    del ckpt["ema"]
    torch.save(ckpt, tmp_path / "model_only.pt")
    model = load_pretrained(small_dit(), tmp_path / "model_only.pt")
    assert all(torch.all(p == 1.0) for p in model.parameters())


def test_mismatch_is_one_line_naming_keys_and_shapes(tmp_path):
    state = small_dit(num_classes=7).state_dict()  # label table (8, 32) instead of (5, 32)
    del state["final_layer.linear.bias"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as info:
        load_pretrained(small_dit(), tmp_path / "bad.pt")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"checkpoint {tmp_path / 'bad.pt'} does not fit the configured model (DiT): "
    )
    assert "missing keys [final_layer.linear.bias]" in message
    assert "unexpected keys [extra.weight]" in message
    assert "y_embedder.embedding_table.weight: ckpt (8, 32) vs model (5, 32)" in message


def test_describe_mismatch_shortens_long_lists():
    model_state = {f"k{i}": torch.zeros(1) for i in range(9)}
    assert describe_state_dict_mismatch(model_state, dict(model_state)) == ""
    message = describe_state_dict_mismatch(model_state, {})
    assert message == "missing keys [k0, k1, k2, k3, k4, ... (+4 more)]"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_pretrained(small_dit(), tmp_path / "nope.pt")


def test_runner_keywords_are_explicit_parameters():
    """The runner passes input_size / image_size, in_channels, num_classes, learn_sigma by name
    when the constructor's signature lists them."""
    dit_params = inspect.signature(build_dit).parameters
    unet_params = inspect.signature(UNetModel).parameters
    for name in ("input_size", "in_channels", "num_classes", "learn_sigma"):
        assert name in dit_params
    for name in ("image_size", "in_channels", "num_classes", "learn_sigma"):
        assert name in unet_params


def test_both_backbones_build_from_config_nodes():
    dit = instantiate(
        {"_target_": "speed.models.dit.build_dit", "name": "DiT-S/4", "hidden_size": 64,
         "depth": 1, "num_heads": 2},
        input_size=28, in_channels=1, num_classes=10, learn_sigma=False,
    )  # fmt: skip
    unet = instantiate(
        {"_target_": "speed.models.UNetModel", "model_channels": 32, "num_res_blocks": 1,
         "attention_resolutions": "14", "channel_mult": [1, 2], "num_head_channels": 32},
        image_size=28, in_channels=1, num_classes=10, learn_sigma=True,
    )  # fmt: skip
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([3, 4])
    assert dit(x, t, y).shape == (2, 1, 28, 28)
    assert unet(x, t, y).shape == (2, 2, 28, 28)
    assert unet.attention_resolutions == (2,)


# ---- what a refusal by the weights-only unpickler is called ----


class _Touch:
    """Unpickling this creates `marker` through `getattr` (not an allowed global)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class _System:
    """Unpickling this runs a shell command (os.system: a module torch blocks outright)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    """A plain object: unpickling imports and builds a class of this module."""


@pytest.mark.parametrize("payload", [_Touch, _System, lambda marker: _Plain()])
def test_a_file_that_needs_code_to_load_says_so(tmp_path, payload):
    marker = tmp_path / "ran"
    path = tmp_path / "custom.pt"
    torch.save({"model": small_dit().state_dict(), "extra": payload(marker)}, path)
    with pytest.raises(DataError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert "this file needs code to load: pass trust_checkpoint=true if you trust its source" in (
        message
    )
    assert str(path) in message and "corrupt" not in message and "\n" not in message
    assert not marker.exists()  # nothing ran


def test_a_broken_pickle_inside_a_whole_archive_is_corrupt(tmp_path):
    """A zip whose data.pkl is garbage (with a right CRC) is corrupt, not code to trust."""
    good, broken = tmp_path / "good.pt", tmp_path / "broken.pt"
    torch.save({"w": torch.ones(3)}, good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                data = data[:2] + b"\xff\xfe\xfd garbage" + data[12:]
            dst.writestr(info, data)
    with pytest.raises(DataError, match="broken.pt is corrupt or truncated"):
        load_checkpoint(broken)
