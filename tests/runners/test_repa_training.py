"""REPA through the train phase from YAML (configs/image/animals/flow/repa.yaml on a tiny DiT):
the projector is trained, saved and restored, so a resumed run is the straight one."""

import json

import numpy as np
import pytest
import torch
from test_fsdp import torchrun  # tests/runners
from tests_paths import REPA_CONFIG  # tests/runners

from speed.config import ConfigError, load_config
from speed.models import load_checkpoint
from speed.runners.sample import sample
from speed.runners.train import train


def test_repa_trains_and_resumes_exactly(tmp_path, tiny_overrides, tiny_dit):
    def cfg(run, steps, *extra):
        overrides = tiny_overrides(run, steps) + tiny_dit + ["sample_every=0", *extra]
        return load_config(REPA_CONFIG, "train", overrides + ["repa.projector_dim=32"])

    straight = train(cfg(tmp_path / "a", 4))
    train(cfg(tmp_path / "b", 2))
    resumed = train(cfg(tmp_path / "b", 4, "resume=true"))
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    first = load_checkpoint(tmp_path / "a/train/checkpoints/0000001.pt")
    assert not torch.equal(
        a["alignment"]["projector.0.weight"], first["alignment"]["projector.0.weight"]
    )
    for key in ("model", "ema", "alignment"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert "projector.0.weight" not in a["model"]  # sampling needs no projector
    overrides = tiny_overrides(tmp_path / "a", 4) + tiny_dit
    assert sample(load_config(REPA_CONFIG, "sample", overrides)).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_equal_one_process_and_resume_exactly(
    tmp_path, tiny_overrides, tiny_dit, strategy
):
    """The projector sits outside the model's DDP wrapper and FSDP units: both strategies must
    start every rank from rank 0's projector and average its gradients once, so two ranks with
    half the batch each compute one process's update (to reduction-order rounding); an FSDP run
    saves the projector and its optimizer state in its shards, so resuming is exact."""

    def overrides(run, steps, *extra):
        common = ["sample_every=0", "data.random_flip=false", "global_batch_size=4"]
        return tiny_overrides(run, steps) + tiny_dit + common + ["repa.projector_dim=32", *extra]

    torchrun(REPA_CONFIG, overrides(tmp_path / "two", 4, f"strategy={strategy}"))
    two = load_checkpoint(tmp_path / "two/train/checkpoints/0000004.pt")
    one = load_checkpoint(train(load_config(REPA_CONFIG, "train", overrides(tmp_path / "one", 4))))
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, atol=1e-5, rtol=0, msg=name)
    if strategy == "ddp":
        for name, tensor in one["alignment"].items():
            torch.testing.assert_close(two["alignment"][name], tensor, atol=1e-5, rtol=0)
        return
    resume = f"resume={tmp_path}/two/train/checkpoints/0000002.pt"
    torchrun(REPA_CONFIG, overrides(tmp_path / "resumed", 4, "strategy=fsdp", resume))
    resumed = load_checkpoint(tmp_path / "resumed/train/checkpoints/0000004.pt")
    for name, tensor in two["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def _image_folder(root, per_class: int = 4):
    """Two classes of 28 x 28 RGB squares at random places (seeded)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            image = np.zeros((28, 28, 3), np.uint8)
            top, left = rng.integers(0, 14, 2)
            image[top : top + 14, left : left + 10] = 255 if c else 128
            Image.fromarray(image).save(root / f"class{c}/{i}.png")
    return root


def test_repa_trains_on_a_latent_cache_without_its_encoder(
    tmp_path, tiny_overrides, tiny_dit, monkeypatch
):
    from speed.alignment.encoders import DomainEncoder
    from speed.data import ImageFolderDataset
    from speed.data.latent_cache import part_paths
    from speed.runners.extract import extract

    folder = _image_folder(tmp_path / "images")
    data = [
        "data._target_=speed.data.ImageFolderDataset",
        f"data.path={folder}",
        "data.image_size=28",
    ]
    common = [*tiny_dit, "sample_every=0", "repa.projector_dim=32"]

    def words(run, *extra):
        return [*tiny_overrides(tmp_path / run, 2), *common, *extra]

    cache = extract(load_config(REPA_CONFIG, "extract", words("images_run", *data)))
    meta = json.loads(part_paths(cache, 0)["meta"].read_text())
    encoder = DomainEncoder()
    assert meta["features"] == {"encoder": encoder.name, "shape": [49, 64]}
    images = ImageFolderDataset(str(folder), 28, random_flip=False)
    x = torch.stack([images[i][0] for i in range(len(images))])
    expected = torch.stack([encoder(x), encoder(x.flip(-1))], dim=1)  # [8, 2, 49, 64]
    stored = torch.from_numpy(np.load(part_paths(cache, 0)["features"]).astype(np.float32))
    torch.testing.assert_close(stored, expected, rtol=2e-3, atol=2e-3)  # stored as float16

    latent = ["data._target_=speed.data.LatentCacheDataset", f"data.path={cache}"]
    monkeypatch.setattr(DomainEncoder, "forward", lambda self, x: pytest.fail("encoder ran"))
    ckpt = load_checkpoint(train(load_config(REPA_CONFIG, "train", words("cached", *latent))))
    assert ckpt["step"] == 2 and "projector.0.weight" in ckpt["alignment"]

    other = words("other", *latent, "repa.encoder.blocks=1")
    with pytest.raises(ConfigError, match="were made by domain classifier, block 2"):
        train(load_config(REPA_CONFIG, "train", other))

    bare = extract(load_config(REPA_CONFIG, "extract", words("bare_run", *data, "repa.lam=0")))
    without = words("without", "data._target_=speed.data.LatentCacheDataset", f"data.path={bare}")
    with pytest.raises(ConfigError, match="holds no encoder features"):
        train(load_config(REPA_CONFIG, "train", without))
