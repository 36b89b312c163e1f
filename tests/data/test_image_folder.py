"""Image folders: class subfolders, flat folders, and undecodable files."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from speed.data import ImageFolderDataset
from speed.errors import DataError


def _save(path, color, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _pixel(color):
    return torch.tensor(color, dtype=torch.float64) / 127.5 - 1.0


def test_subfolders_are_classes_in_sorted_order(tmp_path):
    _save(tmp_path / "zebra" / "a.png", (255, 0, 0))
    _save(tmp_path / "ant" / "b.jpg", (0, 0, 255))
    _save(tmp_path / "ant" / "deeper" / "c.png", (0, 255, 0))
    _save(tmp_path / ".thumbnails" / "hidden.png", (0, 0, 0))  # hidden: ignored
    ds = ImageFolderDataset(str(tmp_path), image_size=8, random_flip=False)
    assert ds.class_names == ["ant", "zebra"] and ds.num_classes == 2
    assert (ds.resolution, ds.num_channels, len(ds), ds.is_latent) == (8, 3, 3, False)
    by_name = {f.name: i for i, f in enumerate(ds.files)}
    x, y = ds[by_name["a.png"]]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and int(y) == 1
    assert torch.allclose(x.double(), _pixel((255, 0, 0))[:, None, None].expand(3, 8, 8))
    assert int(ds[by_name["c.png"]][1]) == 0 and int(ds[by_name["b.jpg"]][1]) == 0


def test_flat_folder_and_class_cond_false_are_unconditional(tmp_path):
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", (i, i, i))
    flat = ImageFolderDataset(str(tmp_path / "flat"), image_size=4)
    assert flat.num_classes == 0 and flat.class_names is None
    assert [int(flat[i][1]) for i in range(3)] == [0, 0, 0]
    _save(tmp_path / "tree" / "a" / "0.png", (1, 1, 1))
    _save(tmp_path / "tree" / "b" / "0.png", (2, 2, 2))
    tree = ImageFolderDataset(str(tmp_path / "tree"), image_size=4, class_cond=False)
    assert tree.num_classes == 0 and len(tree) == 2 and int(tree[1][1]) == 0


def test_bad_folders_give_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.path: no image folder at .*missing"):
        ImageFolderDataset(str(tmp_path / "missing"), image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(str(tmp_path / "empty"), image_size=8)
    _save(tmp_path / "mixed" / "loose.png", (0, 0, 0))
    _save(tmp_path / "mixed" / "cls" / "x.png", (0, 0, 0))
    with pytest.raises(ValueError, match="both images"):
        ImageFolderDataset(str(tmp_path / "mixed"), image_size=8)


@pytest.fixture
def folder_with_corrupt_files(tmp_path):
    """0.png, 1.png (garbage bytes), 2.png (truncated), 3.png; colours tell them apart."""
    _save(tmp_path / "0.png", (10, 10, 10))
    (tmp_path / "1.png").write_bytes(b"this is not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "PNG"
    )
    (tmp_path / "2.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    _save(tmp_path / "3.png", (30, 30, 30))
    return tmp_path


def test_corrupt_image_is_skipped_warned_and_counted(folder_with_corrupt_files):
    ds = ImageFolderDataset(str(folder_with_corrupt_files), image_size=4, random_flip=False)
    assert len(ds) == 4 and ds.num_corrupt == 0
    with pytest.warns(UserWarning) as record:
        x, _ = ds[1]
    # 1.png and then 2.png fail, each warned once by name; the item is 3.png's.
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 and "1.png" in messages[0] and "2.png" in messages[1]
    assert torch.allclose(x.double(), _pixel((30, 30, 30))[:, None, None].expand(3, 4, 4))
    assert ds.num_corrupt == 2
    assert [f.name for f in ds.corrupt_files] == ["1.png", "2.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already marked: skipped without a new warning
        assert torch.equal(ds[2][0], x) and ds.num_corrupt == 2


def test_last_corrupt_item_wraps_to_the_first_and_workers_share_the_count(
    folder_with_corrupt_files,
):
    (folder_with_corrupt_files / "3.png").write_bytes(b"broken too")
    ds = ImageFolderDataset(str(folder_with_corrupt_files), image_size=4, random_flip=False)
    loader = DataLoader(ds, batch_size=4, num_workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ((batch, labels),) = list(loader)
    first = _pixel((10, 10, 10))[:, None, None].expand(3, 4, 4)
    assert all(torch.allclose(batch[i].double(), first) for i in range(4))
    assert ds.num_corrupt == 3  # counted in the worker, seen here


def test_all_corrupt_raises(tmp_path):
    (tmp_path / "a.png").write_bytes(b"nope")
    ds = ImageFolderDataset(str(tmp_path), image_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of the 1 images"):
            ds[0]
