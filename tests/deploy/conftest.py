"""Tiny DiT and UNet denoisers with random (non-zero) weights, each exported once per session.

The zero-initialised output layers of both backbones are re-drawn so the outputs (and any
difference between ONNX Runtime and PyTorch) are not trivially zero. Tests here run on one thread.
"""

import pytest
import torch

from speed.deploy.onnx_graph import export_onnx
from speed.models import UNetModel
from speed.models.dit import DiT

SIDE = 8
NUM_CLASSES = 5


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_dit(num_classes: int = NUM_CLASSES) -> DiT:
    """Latent-like: 4 channels (guidance mixes 3, DiT's convention), learned sigma (8 out)."""
    model = DiT(
        input_size=SIDE,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        depth=2,
        num_heads=2,
        num_classes=num_classes,
        class_dropout_prob=0.1,
        learn_sigma=True,
    )
    return randomised(model, seed=1)


def tiny_unet() -> UNetModel:
    """Pixel-like: 1 channel, eps only, attention at 4x4."""
    model = UNetModel(
        image_size=SIDE,
        in_channels=1,
        model_channels=32,
        out_channels=1,
        num_res_blocks=1,
        attention_resolutions=(2,),  # downsample rate 2: 4x4 at SIDE 8
        channel_mult=(1, 2),
        num_classes=NUM_CLASSES,
        class_dropout_prob=0.1,
        num_head_channels=32,
        use_scale_shift_norm=True,
    )
    return randomised(model, seed=2)


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """fn(name) -> (model, path of its .onnx) for name in dit, unet, uncond_dit; exported once."""
    builders = {"dit": tiny_dit, "unet": tiny_unet, "uncond_dit": lambda: tiny_dit(0)}
    done = {}

    def get(name):
        if name not in done:
            model = builders[name]()
            channels = model.in_channels
            path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
            done[name] = (model, export_onnx(model, path, channels, SIDE))
        return done[name]

    return get
