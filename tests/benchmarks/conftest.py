"""The benchmark scripts are run as `python benchmarks/NAME.py`, so they import their sibling
(`models_forward`) as a top-level module: put benchmarks/ on the path the same way. Tests run
single-threaded (see `single_thread` in tests/conftest.py)."""

import sys
from pathlib import Path

import pytest
import torch

from speed.autoencoders import Identity
from speed.diffusion import create_diffusion
from speed.models import build_dit
from speed.runners.inference import image_noise

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


@pytest.fixture(scope="module")
def tiny():
    """(model, diffusion, autoencoder, noise, labels): a tiny class-conditional DiT in pixel space
    (8x8x1, 3 classes) with 6 images' noise and labels, for the sampling benchmarks."""
    torch.manual_seed(0)
    model = build_dit(
        "DiT-S/4",
        input_size=8,
        in_channels=1,
        num_classes=3,
        depth=1,
        hidden_size=32,
        num_heads=2,
        learn_sigma=False,
    ).eval()
    for p in model.parameters():  # adaLN-Zero starts at zero: give the output something to do
        p.data.add_(0.05 * torch.randn_like(p))
    noise = image_noise(1, 8, seed=0, indices=range(6))
    labels = torch.arange(6) % 3
    return model, create_diffusion("", learn_sigma=False), Identity(), noise, labels
