"""Fixtures shared by every test folder: a tiny randomly initialised AutoencoderKL saved as a
local diffusers folder."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """Folder of an AutoencoderKL with 2 blocks (downsample 2) and 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    folder = tmp_path_factory.mktemp("tiny_vae")
    vae.save_pretrained(folder)
    return folder
