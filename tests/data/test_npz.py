"""NpzDataset: the ADM evaluator's arr_0 / arr_1 layout."""

import numpy as np
import pytest
import torch

from speed.data import NpzDataset


def test_images_and_labels_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    labels = np.array([3, 0, 1, 3, 2])
    np.savez(tmp_path / "set.npz", images, labels)  # stored as arr_0, arr_1
    ds = NpzDataset(str(tmp_path / "set.npz"), random_flip=False)
    assert (len(ds), ds.resolution, ds.num_channels, ds.num_classes) == (5, 8, 3, 4)
    assert ds.class_names is None and not ds.is_latent
    for i in range(5):
        x, y = ds[i]
        expected = images[i].transpose(2, 0, 1).astype(np.float64) / 127.5 - 1.0
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and int(y) == labels[i]
        np.testing.assert_allclose(x.double().numpy(), expected, atol=1e-6)


def test_unlabelled_grayscale_is_unconditional_one_channel(tmp_path):
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    np.savez(tmp_path / "g.npz", arr_0=images)
    ds = NpzDataset(str(tmp_path / "g.npz"), random_flip=True)
    assert (ds.num_channels, ds.num_classes, int(ds[1][1])) == (1, 0, 0)
    torch.manual_seed(0)
    seen = {tuple(ds[0][0][0, 0].tolist()) for _ in range(40)}
    row = images[0, 0] / 127.5 - 1.0
    assert seen == {tuple(np.float32(row)), tuple(np.float32(row[::-1]))}


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.path: no \.npz file at"):
        NpzDataset(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "wide.npz", arr_0=np.zeros((2, 4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \[N, H, H, C\]"):
        NpzDataset(str(tmp_path / "wide.npz"))
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        NpzDataset(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "labels.npz", arr_0=np.zeros((2, 4, 4, 3), np.uint8), arr_1=np.zeros(3))
    with pytest.raises(ValueError, match="arr_1"):
        NpzDataset(str(tmp_path / "labels.npz"))
