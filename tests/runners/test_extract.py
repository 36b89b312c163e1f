"""The extract phase: a tiny image folder encoded by a tiny random VAE, then trained on."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from speed.autoencoders.sd_vae import SD_VAE_SCALE
from speed.config import ConfigError, load_config
from speed.data import LatentCacheDataset
from speed.data.latent_cache import latent_noise_generator, part_paths
from speed.models import load_checkpoint
from speed.runners.extract import extract
from speed.runners.train import train

REPO = Path(__file__).resolve().parents[2]
SEED = 3
# Item i of the folder (sorted paths): class a holds items 0-2, class b items 3-5.
FILES = [f"{cls}/{i}.png" for cls, items in (("a", range(3)), ("b", range(3, 6))) for i in items]


@pytest.fixture
def experiment(tmp_path, tiny_vae_dir):
    """(config path, root overrides, the images as uint8 [6, 16, 20, 3]) of a tiny latent run."""
    images = np.random.default_rng(0).integers(0, 256, (len(FILES), 16, 20, 3), dtype=np.uint8)
    for name, image in zip(FILES, images):
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / name)
    (tmp_path / "configs").mkdir()
    shutil.copy(REPO / "configs/base.yaml", tmp_path / "configs/base.yaml")
    experiment = {
        "data": {
            "_target_": "speed.data.ImageFolderDataset",
            "path": str(tmp_path / "images"),
            "image_size": 16,
            "batch_size": 3,
        },
        "autoencoder": {"_target_": "speed.autoencoders.SDVAE", "path": str(tiny_vae_dir)},
        "model": {"name": "DiT-S/2", "hidden_size": 32, "depth": 1, "num_heads": 2},
    }
    config = tmp_path / "configs/tiny.yaml"
    config.write_text(yaml.safe_dump(experiment))
    overrides = [
        f"experiment_dir={tmp_path / 'run'}",
        f"seed={SEED}",
        "per_proc_batch_size=4",
        "wandb=disabled",
        "tensorboard=false",
    ]
    return config, overrides, images


def expected_latents(vae_dir: Path, images: np.ndarray) -> torch.Tensor:
    """[N, 2, 4, 8, 8]: 0.18215 * (mean + std * noise) of each centre-cropped image and mirror,
    computed with diffusers directly; item i, mirror f draws its noise from (seed, i, f)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True).eval()
    left = (images.shape[2] - 16) // 2  # ADM centre crop of a 16 x 20 image to 16 x 16
    x = torch.from_numpy(images[:, :, left : left + 16]).permute(0, 3, 1, 2).float() / 127.5 - 1
    out = []
    with torch.no_grad():
        for i, image in enumerate(x):
            pair = []
            for flip, view in enumerate((image, image.flip(-1))):
                posterior = vae.encode(view[None]).latent_dist
                noise = torch.randn(
                    posterior.mean.shape[1:], generator=latent_noise_generator(SEED, i, flip)
                )
                pair.append(SD_VAE_SCALE * (posterior.mean[0] + posterior.std[0] * noise))
            out.append(torch.stack(pair))
    return torch.stack(out)


def test_extract_then_train_on_the_cache(experiment, tiny_vae_dir, capsys):
    config, overrides, images = experiment
    folder = extract(load_config(config, "extract", overrides))
    assert folder == Path(overrides[0].split("=", 1)[1]) / "latents"
    assert (folder / "config.yaml").is_file()

    # Every image and its mirror, encoded as diffusers would, in dataset order with labels.
    stored = np.load(part_paths(folder, 0)["latents"])
    items = np.load(part_paths(folder, 0)["items"])
    assert stored.shape == (6, 2, 4, 8, 8) and stored.dtype == np.float16
    assert items["indices"].tolist() == list(range(6))
    assert items["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    expected = expected_latents(tiny_vae_dir, images)
    torch.testing.assert_close(torch.from_numpy(stored).float(), expected, rtol=2e-3, atol=1e-3)
    cache = LatentCacheDataset(str(folder), random_flip=False)
    assert len(cache) == 6 and cache.num_classes == 2 and cache.resolution == 8
    x, y = cache[4]
    assert torch.equal(x, torch.from_numpy(stored[4, 0]).float()) and int(y) == 1

    # A second extraction must be asked for; it does not depend on the batch size.
    with pytest.raises(ConfigError, match="already holds a latent cache"):
        extract(load_config(config, "extract", overrides))
    again = overrides + ["overwrite=true", "per_proc_batch_size=5"]
    extract(load_config(config, "extract", again))
    assert np.array_equal(np.load(part_paths(folder, 0)["latents"]), stored)

    # The printed override trains on the cache (latent spec 4 x 8 x 8, 2 classes).
    train_words = capsys.readouterr().out.strip().splitlines()[-1].split("with: ")[1].split()
    assert train_words == [
        "data._target_=speed.data.LatentCacheDataset",
        f"data.path={folder}",
    ]
    steps = ["max_training_steps=2", "ckpt_every=2", "log_every=1"]
    last = train(load_config(config, "train", overrides + train_words + steps))
    state = load_checkpoint(last)
    assert state["step"] == 2
    assert state["data_spec"] == {"channels": 4, "side": 8, "num_classes": 2}


def test_extract_refuses_a_latent_dataset(experiment, tmp_path):
    config, overrides, _ = experiment
    latent = ["data._target_=speed.data.LatentCacheDataset", f"data.path={tmp_path}"]
    cfg = load_config(config, "extract", overrides + latent)
    with pytest.raises(ConfigError, match="already holds latents") as error:
        extract(cfg)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run/latents").exists()


def test_training_refuses_a_cache_of_another_autoencoder(experiment):
    config, overrides, _ = experiment
    cache = extract(load_config(config, "extract", overrides))
    on_cache = [*overrides, "data._target_=speed.data.LatentCacheDataset", f"data.path={cache}"]
    mismatched = [*on_cache, "autoencoder._target_=speed.autoencoders.Identity"]
    with pytest.raises(ConfigError, match="latent cache was written by sd-vae"):
        train(load_config(config, "train", mismatched))
