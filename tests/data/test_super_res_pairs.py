"""The super-resolution degradation against its formulas (Keys' bicubic with a = -0.5 stretched
for antialiasing, as PIL's BICUBIC; a normalised Gaussian kernel with reflect padding; additive
noise from the given generator), the pairs' held-out split, and low-res inputs from files."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from speed.data.degradation import Degradation, bicubic_resize
from speed.data.super_res import SuperResolution, read_low_res


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


def keys_cubic(s: np.ndarray, a: float = -0.5) -> np.ndarray:
    s = np.abs(s)
    near = (a + 2) * s**3 - (a + 3) * s**2 + 1
    far = a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return np.where(s <= 1, near, np.where(s < 2, far, 0.0))


def downsampling_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row i: the antialiased bicubic weights of output pixel i (kernel stretched by the scale,
    half-pixel centres, weights normalised over the pixels inside the image)."""
    scale = n_in / n_out
    rows = []
    for i in range(n_out):
        w = keys_cubic((np.arange(n_in) + 0.5 - (i + 0.5) * scale) / scale)
        rows.append(w / w.sum())
    return np.stack(rows)


def gaussian_blur_reference(x: np.ndarray, sigma: float) -> np.ndarray:
    """x [H, W] blurred by the normalised kernel exp(-i^2 / 2 sigma^2), |i| <= ceil(3 sigma),
    separably, with reflect padding."""
    r = math.ceil(3 * sigma)
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    padded = np.pad(x, r, mode="reflect")
    rows = sum(k[i] * padded[:, i : i + x.shape[1]] for i in range(2 * r + 1))
    return sum(k[i] * rows[i : i + x.shape[0], :] for i in range(2 * r + 1))


def image(seed=0, side=28, channels=1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(channels, side, side, generator=gen) * 1.6 - 0.8  # inside [-1, 1]


def test_bicubic_down_sampling_is_keys_cubic_antialiased_as_pil():
    x = image()
    low = Degradation(14)(x)
    matrix = downsampling_matrix(28, 14)
    expected = matrix @ x[0].double().numpy() @ matrix.T
    np.testing.assert_allclose(low[0].numpy(), expected, atol=1e-6)
    pil = Image.fromarray(x[0].numpy(), mode="F").resize((14, 14), Image.BICUBIC)
    np.testing.assert_allclose(low[0].numpy(), np.asarray(pil), atol=1e-6)
    assert low.shape == (1, 14, 14)


def test_blur_then_down_sampling():
    x = image(1)
    degradation = Degradation(14, blur_sigma=1.2)
    assert degradation.kernel_size == 9  # 2 * ceil(3.6) + 1
    blurred = gaussian_blur_reference(x[0].double().numpy(), 1.2)
    matrix = downsampling_matrix(28, 14)
    np.testing.assert_allclose(degradation(x)[0].numpy(), matrix @ blurred @ matrix.T, atol=1e-5)


def test_noise_is_added_from_the_generator_and_clamped():
    x = image(2)
    clean = Degradation(14)(x)
    noisy = Degradation(14, noise_std=0.3)(x, torch.Generator().manual_seed(7))
    noise = torch.randn(1, 1, 14, 14, generator=torch.Generator().manual_seed(7))[0]
    assert torch.equal(noisy, (clean + 0.3 * noise).clamp(-1, 1))
    assert noisy.min() >= -1 and noisy.max() <= 1 and not torch.equal(noisy, clean)
    batch = Degradation(14, noise_std=0.3)(x[None], torch.Generator().manual_seed(7))
    assert torch.equal(batch[0], noisy)  # [N, C, H, W] as [C, H, W]


def test_bad_settings_name_their_key():
    with pytest.raises(ValueError, match="data.low_size"):
        Degradation(0)
    with pytest.raises(ValueError, match="data.blur_sigma"):
        Degradation(14, blur_sigma=-1)
    with pytest.raises(ValueError, match="data.low_size=28 must be smaller"):
        Degradation(28)(image())


class Squares(torch.utils.data.Dataset):
    """Item i: a constant image of value i / 100 with label i % 3, flipped if asked."""

    resolution, num_channels, num_classes, class_names = 8, 1, 3, ["a", "b", "c"]

    def __init__(self, n=20):
        self.labels = torch.arange(n) % 3
        self.random_flip = True

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.full((1, 8, 8), i / 100)
        x[..., 0] = -1.0  # a left edge, so a flip would show
        return (x.flip(-1) if self.random_flip else x), self.labels[i]


def test_held_out_split_is_fixed_disjoint_and_unflipped():
    train = SuperResolution(Squares(), low_size=4, held_out=5)
    held = SuperResolution(Squares(), low_size=4, held_out=5, split="held_out", class_cond=True)
    assert len(train) == 15 and len(held) == 5
    assert set(train.indices.tolist()) | set(held.indices.tolist()) == set(range(20))
    x, conditions = held[0]
    i = int(held.indices[0])
    assert torch.all(x[..., 0] == -1) and torch.allclose(x[..., 1:], torch.tensor(i / 100))
    assert torch.equal(conditions["low_res"], Degradation(4)(x))
    assert int(conditions["y"]) == i % 3 and held.labels.tolist() == (held.indices % 3).tolist()
    assert "y" not in train[0][1] and train.num_classes == 0 and held.num_classes == 3
    noisy = SuperResolution(Squares(), 4, noise_std=0.1, held_out=5, split="held_out")
    assert torch.equal(noisy[2][1]["low_res"], noisy[2][1]["low_res"])  # seeded by the index
    with pytest.raises(ValueError, match="data.split=held_out needs data.held_out"):
        SuperResolution(Squares(), 4, split="held_out")


def save(path, array):
    Image.fromarray(array).save(path)
    return path


def test_read_low_res_takes_low_size_images_as_they_are_and_degrades_others(tmp_path):
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (14, 14), dtype=np.uint8)
    high = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    save(tmp_path / "a.png", low)
    degradation = Degradation(14)
    names, images, references = read_low_res(tmp_path / "a.png", 1, 28, degradation)
    assert names == ["a.png"] and references is None
    assert torch.equal(images[0, 0], torch.from_numpy(low).float() / 127.5 - 1)

    folder = tmp_path / "refs"
    folder.mkdir()
    save(folder / "b.png", high)
    names, images, references = read_low_res(folder, 1, 28, degradation)
    expected = torch.from_numpy(high).float() / 127.5 - 1
    assert names == ["b.png"] and torch.equal(references[0, 0], expected)
    assert torch.equal(images[0], degradation(references[0]))


def test_bicubic_up_sampling_is_clamped_to_the_image_range():
    low = torch.tensor([[[[-1.0, 1.0], [1.0, -1.0]]]])
    up = bicubic_resize(low, 8)
    assert up.min() == -1 and up.max() == 1  # the cubic's overshoot is cut
