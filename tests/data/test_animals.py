"""The demo dataset: the real animal-mnist arrays, label names, resizing, padding, flips."""

import numpy as np
import pytest
import torch
from PIL import Image

from speed.data import ANIMAL_CLASSES, AnimalMNIST, load_animal_mnist_arrays
from speed.errors import ConfigError


@pytest.fixture(scope="module")
def arrays():
    return load_animal_mnist_arrays()


def test_arrays_are_10000_images_1000_per_class(arrays):
    images, labels = arrays
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [1000] * 10
    assert images.min() == 0 and images.max() == 255


def test_class_names_match_the_silhouettes(arrays):
    """Giraffes are the tallest, thinnest shapes; elephants the widest and heaviest."""
    images, labels = arrays
    ink = (images > 127).astype(np.float64)
    height = ink.any(axis=2).sum(axis=1)
    width = np.maximum(ink.any(axis=1).sum(axis=1), 1)
    aspect = [np.mean(height[labels == c] / width[labels == c]) for c in range(10)]
    fill = [ink[labels == c].mean() for c in range(10)]
    assert ANIMAL_CLASSES[int(np.argmax(aspect))] == "giraffe"
    assert ANIMAL_CLASSES[int(np.argmin(fill))] == "giraffe"
    assert ANIMAL_CLASSES[int(np.argmin(aspect))] == "elephant"
    assert ANIMAL_CLASSES[int(np.argmax(fill))] == "elephant"
    assert ANIMAL_CLASSES == sorted(ANIMAL_CLASSES) and len(set(ANIMAL_CLASSES)) == 10


def test_items_are_the_images_in_minus_one_to_one(arrays):
    images, labels = arrays
    ds = AnimalMNIST(random_flip=False)
    assert (ds.resolution, ds.num_channels, ds.num_classes) == (28, 1, 10)
    assert ds.class_names == ANIMAL_CLASSES and not ds.is_latent and len(ds) == 10000
    for i in (0, 4321, 9999):
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
        expected = images[i].astype(np.float64) / 127.5 - 1.0
        np.testing.assert_allclose(x[0].double().numpy(), expected, atol=1e-6)
        assert y.dtype == torch.int64 and int(y) == labels[i]


def test_random_flip_mirrors_about_half_the_draws(arrays):
    images, _ = arrays
    ds = AnimalMNIST(random_flip=True)
    plain = torch.from_numpy(images[0]).float() / 127.5 - 1.0
    assert not torch.equal(plain, plain.flip(-1))
    torch.manual_seed(0)
    flips = 0
    for _ in range(400):
        x = ds[0][0][0]
        assert torch.equal(x, plain) or torch.equal(x, plain.flip(-1))
        flips += torch.equal(x, plain.flip(-1))
    assert 160 < flips < 240  # Binomial(400, 1/2): mean 200, sd 10


def test_resize_matches_pil_antialiased_bilinear(arrays):
    images, _ = arrays
    ds = AnimalMNIST(image_size=14, random_flip=False)
    assert ds.resolution == 14
    for i in (0, 5000):
        ours = (ds[i][0][0] + 1.0) * 127.5
        pil = np.asarray(Image.fromarray(images[i]).resize((14, 14), Image.BILINEAR), np.float64)
        assert np.abs(ours.double().numpy() - pil).max() <= 1.0 + 1e-4  # PIL rounds to uint8


def test_pad_to_surrounds_the_image_with_background(arrays):
    images, _ = arrays
    ds = AnimalMNIST(pad_to=32, random_flip=False)
    x = ds[7][0][0]
    assert ds.resolution == 32 and x.shape == (32, 32)
    np.testing.assert_allclose(x[2:30, 2:30].numpy(), images[7] / 127.5 - 1.0, atol=1e-6)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(x[border] == -1.0)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="pad_to"):
        AnimalMNIST(image_size=28, pad_to=20)
    with pytest.raises(ValueError, match="image_size"):
        AnimalMNIST(image_size=0)


def test_classes_keep_only_their_images_with_their_own_labels(arrays):
    images, labels = arrays
    zebras = AnimalMNIST(random_flip=False, classes=["zebra"])
    assert len(zebras) == 1000 and set(zebras.labels.tolist()) == {9}
    assert zebras.num_classes == 10  # the model keeps a row for every class
    x, y = zebras[0]
    first = int(np.flatnonzero(labels == 9)[0])
    assert int(y) == 9 and torch.equal(x[0], torch.from_numpy(images[first]).float() / 127.5 - 1)
    nine = AnimalMNIST(random_flip=False, classes=list(range(9)))
    assert len(nine) == 9000 and 9 not in nine.labels.tolist()
    assert len(AnimalMNIST(classes=[2, "dog", "3"])) == 3000  # cat, dog, cow
    with pytest.raises(ConfigError, match="no class 'zebu'; the classes are bear, bird"):
        AnimalMNIST(classes=["zebu"])
    with pytest.raises(ConfigError, match=r"10 is not a class index \(0..9\)"):
        AnimalMNIST(classes=[10])
