"""The latent cache: extract once (both mirrors), read back, any number of ranks."""

import json

import numpy as np
import pytest
import torch

from speed.autoencoders import SDVAE, Identity
from speed.data import LatentCacheDataset, NpzDataset, extract_latents
from speed.data.latent_cache import latent_noise_generator


@pytest.fixture
def images(tmp_path):
    """An .npz of 5 RGB 16x16 images with labels; returns (path, images, labels)."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    labels = np.array([2, 0, 1, 2, 1])
    np.savez(tmp_path / "images.npz", arr, labels)
    return str(tmp_path / "images.npz"), arr, labels


def _pixels(arr):
    return torch.from_numpy(arr.transpose(0, 3, 1, 2).astype(np.float32)) / 127.5 - 1.0


def test_identity_round_trip_stores_each_image_and_its_mirror(images, tmp_path):
    path, arr, labels = images
    ds = NpzDataset(path, random_flip=False)
    extract_latents(
        ds, Identity(), tmp_path / "cache", batch_size=2, dtype="float32", progress=False
    )
    assert sorted(f.name for f in (tmp_path / "cache").iterdir()) == [
        "part-00000.items.npz",
        "part-00000.json",
        "part-00000.latents.npy",
    ]  # no temporary files left behind
    cache = LatentCacheDataset(str(tmp_path / "cache"), random_flip=False)
    assert len(cache) == 5 and cache.is_latent
    assert (cache.resolution, cache.num_channels, cache.num_classes) == (16, 3, 3)
    assert cache.metadata["autoencoder"] == "identity" and cache.source_resolution == 16
    x = _pixels(arr)
    for i in range(5):
        z, y = cache[i]
        assert z.dtype == torch.float32 and torch.equal(z, x[i]) and int(y) == labels[i]
    flipping = LatentCacheDataset(str(tmp_path / "cache"))
    torch.manual_seed(0)
    mirrored = 0
    for _ in range(60):
        z = flipping[3][0]
        assert torch.equal(z, x[3]) or torch.equal(z, x[3].flip(-1))
        mirrored += torch.equal(z, x[3].flip(-1))
    assert 15 < mirrored < 45  # Binomial(60, 1/2): mean 30, sd 3.9


def test_vae_cache_holds_the_encodings_of_image_and_mirror(images, tmp_path, tiny_vae_dir):
    path, arr, _ = images
    vae = SDVAE(str(tiny_vae_dir), sample_posterior=False)
    extract_latents(
        NpzDataset(path, random_flip=False), vae, tmp_path / "c", dtype="float32", progress=False
    )
    cache = LatentCacheDataset(str(tmp_path / "c"), random_flip=False)
    assert (cache.resolution, cache.num_channels, cache.scale) == (8, 4, vae.scale)
    x = _pixels(arr)
    stored = np.load(tmp_path / "c" / "part-00000.latents.npy")
    assert stored.shape == (5, 2, 4, 8, 8)
    torch.testing.assert_close(torch.from_numpy(stored[:, 0]), vae.encode(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        torch.from_numpy(stored[:, 1]), vae.encode(x.flip(-1)), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(cache[4][0], vae.encode(x[4:5])[0], atol=1e-5, rtol=0)


def test_sampled_cache_is_the_same_for_any_rank_count_and_batch(images, tmp_path, tiny_vae_dir):
    path, arr, labels = images
    ds = NpzDataset(path, random_flip=False)
    vae = SDVAE(str(tiny_vae_dir), sample_posterior=True)
    kw = dict(dtype="float32", progress=False, seed=3)
    extract_latents(ds, vae, tmp_path / "one", batch_size=5, **kw)
    for rank in range(2):
        extract_latents(ds, vae, tmp_path / "two", batch_size=1, rank=rank, world_size=2, **kw)
    one = LatentCacheDataset(str(tmp_path / "one"), random_flip=False)
    two = LatentCacheDataset(str(tmp_path / "two"), random_flip=False)
    for i in range(5):
        torch.testing.assert_close(one[i][0], two[i][0], atol=1e-5, rtol=0)
        assert int(two[i][1]) == labels[i]
    # Item 2's mirror: scale * (mean + std * noise), the noise from generator (seed 3, item 2, 1).
    with torch.no_grad():
        posterior = vae.vae.encode(_pixels(arr)[2:3].flip(-1)).latent_dist
    noise = torch.randn((4, 8, 8), generator=latent_noise_generator(3, 2, 1))
    expected = vae.scale * (posterior.mean[0] + posterior.std[0] * noise)
    stored = np.load(tmp_path / "one" / "part-00000.latents.npy")[2, 1]
    torch.testing.assert_close(torch.from_numpy(stored), expected, atol=1e-5, rtol=0)


def test_float16_cache_is_within_half_precision(images, tmp_path):
    path, arr, _ = images
    extract_latents(NpzDataset(path, random_flip=False), Identity(), tmp_path / "h", progress=False)
    cache = LatentCacheDataset(str(tmp_path / "h"), random_flip=False)
    assert cache.metadata["dtype"] == "float16"
    x = _pixels(arr)
    assert torch.allclose(cache[1][0], x[1], atol=2**-11, rtol=0)


def test_bad_inputs_and_incomplete_caches_are_refused(images, tmp_path):
    path, _, _ = images
    with pytest.raises(ValueError, match="random_flip=False"):
        extract_latents(NpzDataset(path), Identity(), tmp_path / "x", progress=False)
    with pytest.raises(FileNotFoundError, match=r"data\.path: no latent cache folder"):
        LatentCacheDataset(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no latent cache parts"):
        LatentCacheDataset(str(tmp_path / "empty"))
    ds = NpzDataset(path, random_flip=False)
    extract_latents(ds, Identity(), tmp_path / "half", rank=1, world_size=2, progress=False)
    with pytest.raises(ValueError, match=r"found ranks \[1\] of 2"):
        LatentCacheDataset(str(tmp_path / "half"))
    meta = json.loads((tmp_path / "half" / "part-00001.json").read_text())
    assert meta["part_items"] == 2 and meta["world_size"] == 2


def test_a_captioned_dataset_keeps_its_captions_in_the_cache(tmp_path):
    from speed.data import AnimalPairs

    pairs = AnimalPairs(image_size=8, num_pairs=7)
    for rank in range(2):
        extract_latents(pairs, Identity(), tmp_path, batch_size=3, rank=rank, world_size=2)
    cache = LatentCacheDataset(str(tmp_path))
    assert cache.has_captions and len(cache) == 7
    assert not cache.random_flip  # a mirror would swap "left" and "right"
    for i in range(7):
        z, y = cache[i]
        assert y.item() == i and cache.captions(i) == pairs.captions(i)
        torch.testing.assert_close(z, pairs[i][0], atol=1e-3, rtol=0)  # stored as float16
    plain = LatentCacheDataset.__new__(LatentCacheDataset)
    assert not plain.has_captions  # a cache of labelled images holds no captions
