"""evaluations/image_io.py and reference.py: npz / folder / statistics inputs."""

import numpy as np
import pytest
from PIL import Image

from evaluations.image_io import ImageSource, load_source
from evaluations.reference import FeatureStats


def _write_folder(folder, images, suffix=".png"):
    for i, image in enumerate(images):
        sub = folder / f"part{i % 2}"  # nested, so the recursive, sorted walk matters
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(
            sub / f"{i:03d}{suffix}"
        )


def test_npz_and_folder_give_the_same_images(tmp_path, random_images):
    images = random_images(0, n=6, size=8, channels=3)
    np.savez(tmp_path / "set.npz", arr_0=images, arr_1=np.arange(6) % 3)
    _write_folder(tmp_path / "set", images)
    from_npz, from_folder = load_source(tmp_path / "set.npz"), load_source(tmp_path / "set")
    assert isinstance(from_npz, ImageSource) and isinstance(from_folder, ImageSource)
    np.testing.assert_array_equal(from_npz.labels, np.arange(6) % 3)
    assert from_folder.labels is None
    order = [0, 2, 4, 1, 3, 5]  # part0/000, part0/002, part0/004, part1/001, ...
    np.testing.assert_array_equal(from_folder.images, images[order])
    np.testing.assert_array_equal(from_npz.images, images)


def test_grayscale_inputs_keep_one_channel(tmp_path, random_images):
    images = random_images(1, n=3, size=5)
    np.savez(tmp_path / "gray.npz", arr_0=images[..., 0])  # [N, H, W] is accepted
    _write_folder(tmp_path / "gray", images)
    assert load_source(tmp_path / "gray.npz").images.shape == (3, 5, 5, 1)
    np.testing.assert_array_equal(
        np.sort(load_source(tmp_path / "gray").images, 0), np.sort(images, 0)
    )


def test_sixteen_bit_and_transparent_files_are_converted_not_clipped(tmp_path):
    """A 16-bit grayscale PNG is scaled to 0..255 (one channel); an RGBA PNG is composited over
    white (three channels)."""
    gray = tmp_path / "gray"
    gray.mkdir()
    Image.fromarray(np.array([[0, 256], [32768, 65535]], np.uint16)).save(gray / "a.png")
    np.testing.assert_array_equal(load_source(gray).images[0, ..., 0], [[0, 1], [128, 255]])
    color = tmp_path / "color"
    color.mkdir()
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(color / "a.png")
    np.testing.assert_array_equal(load_source(color).images[0], [[[10, 20, 30], [255] * 3]])


def test_corrupt_image_is_skipped_with_a_warning(tmp_path, random_images):
    _write_folder(tmp_path / "set", random_images(2, n=4, size=6, channels=3), ".jpg")
    bad = tmp_path / "set" / "part0" / "broken.png"
    bad.write_bytes(b"not a picture")
    with pytest.warns(UserWarning) as record:
        source = load_source(tmp_path / "set")
    messages = [str(w.message) for w in record]
    assert any("broken.png" in m for m in messages) and any("skipped 1 " in m for m in messages)
    assert len(source) == 4 and source.skipped == [str(bad)]


def test_num_keeps_the_first_images(tmp_path, random_images):
    images = random_images(3, n=5, size=4)
    np.savez(tmp_path / "s.npz", arr_0=images, arr_1=np.arange(5))
    source = load_source(tmp_path / "s.npz", num=2)
    np.testing.assert_array_equal(source.images, images[:2])
    np.testing.assert_array_equal(source.labels, [0, 1])
    with pytest.raises(ValueError, match="asked for 9 images"):
        load_source(tmp_path / "s.npz", num=9)


def test_statistics_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    stats = FeatureStats(
        mu=rng.normal(size=3),
        sigma=np.eye(3),
        extractor="net A",
        origin="test",
        num_images=10,
        features=rng.normal(size=(10, 3)),
    )
    stats.save(tmp_path / "ref.npz", with_features=True)
    loaded = load_source(tmp_path / "ref.npz")
    assert isinstance(loaded, FeatureStats)
    assert loaded.extractor == "net A" and loaded.num_images == 10 and loaded.mu_s is None
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_allclose(loaded.features, stats.features, rtol=1e-6)  # stored as float32


def test_adm_reference_batch_keeps_images_and_statistics(tmp_path, random_images):
    images = random_images(4, n=3, size=4, channels=3)
    np.savez(tmp_path / "adm.npz", arr_0=images, mu=np.zeros(2), sigma=np.eye(2))
    source = load_source(tmp_path / "adm.npz")
    assert isinstance(source, ImageSource) and source.stats.extractor is None
    np.testing.assert_array_equal(source.stats.sigma, np.eye(2))


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"foo": np.zeros(2)}, "neither 'arr_0'"),
        ({"arr_0": np.zeros((2, 4, 4, 3), np.float32)}, "uint8"),
        ({"arr_0": np.zeros((2, 3, 4, 4), np.uint8)}, "channels-first"),
        ({"mu": np.zeros(2)}, "no 'sigma'"),
    ],
)
def test_bad_npz_files_name_the_problem(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises((KeyError, ValueError), match=match):
        load_source(tmp_path / "bad.npz")


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_source(tmp_path / "missing.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable"):
        load_source(tmp_path / "empty")
