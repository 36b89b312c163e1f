"""SDVAE: loading from a local folder, scaling, posterior sampling, frozen weights."""

import pytest
import torch

from speed.autoencoders import SDVAE


def test_missing_folder_is_a_one_line_error_naming_the_key(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        SDVAE(str(tmp_path / "nowhere"))
    message = str(error.value)
    assert message.startswith("autoencoder.path: no VAE folder at ")
    assert str(tmp_path / "nowhere") in message and "sd-vae-ft-ema" in message
    assert "\n" not in message


def test_properties_follow_the_vae_config(tiny_vae_dir):
    ae = SDVAE(str(tiny_vae_dir))
    assert ae.latent_channels == 4 and ae.downsample == 2
    assert ae.scale == 0.18215  # the SD VAE latent multiplier (LDM, DiT)
    with pytest.raises(ValueError, match="dtype"):
        SDVAE(str(tiny_vae_dir), dtype="float8")


def test_encode_is_scaled_posterior_mean_and_decode_unscales(tiny_vae_dir):
    ae = SDVAE(str(tiny_vae_dir), scale=0.5, sample_posterior=False)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 4, 8, 8)
    with torch.no_grad():
        mean = ae.vae.encode(x).latent_dist.mean
        image = ae.vae.decode(z / 0.5).sample
    torch.testing.assert_close(z, 0.5 * mean)
    torch.testing.assert_close(ae.decode(z), image)
    assert ae.decode(z).shape == (2, 3, 16, 16)


def test_posterior_sample_uses_one_generator_per_image(tiny_vae_dir):
    ae = SDVAE(str(tiny_vae_dir))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]
    pair = ae.encode(x, generator=gens(1, 2))
    alone = ae.encode(x[1:], generator=gens(2))
    torch.testing.assert_close(pair[1:], alone, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        posterior = ae.vae.encode(x[1:]).latent_dist
    noise = torch.randn(posterior.mean.shape[1:], generator=gens(2)[0])
    expected = ae.scale * (posterior.mean + posterior.std * noise)
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pair[0], ae.scale * ae.vae.encode(x[:1]).latent_dist.mean)
    with pytest.raises(ValueError, match="1 generators for 2 images"):
        ae.encode(x, generator=gens(1))


def test_weights_are_frozen_and_stay_in_eval_mode(tiny_vae_dir):
    ae = SDVAE(str(tiny_vae_dir))
    ae.train()
    assert not ae.training and not ae.vae.training
    assert not any(p.requires_grad for p in ae.parameters())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    assert not ae.encode(x).requires_grad
