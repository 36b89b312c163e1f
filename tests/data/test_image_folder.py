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


def _truncated_png(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "PNG"
    )
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_corrupt_image_is_skipped_warned_and_counted(folder_with_corrupt_files):
    with pytest.warns(UserWarning, match=r"leaving out 1 file\(s\) that are no images: .*1\.png"):
        ds = ImageFolderDataset(str(folder_with_corrupt_files), image_size=4, random_flip=False)
    assert len(ds) == 3 and ds.num_corrupt == 0  # the summary counts only images
    assert [f.name for f in ds.files] == ["0.png", "2.png", "3.png"]
    assert [f.name for f in ds.skipped] == ["1.png"]
    with pytest.warns(UserWarning) as record:
        x, _ = ds[1]
    # 2.png's pixels are cut short: warned once by name; the item is 3.png's.
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "2.png" in messages[0]
    assert torch.allclose(x.double(), _pixel((30, 30, 30))[:, None, None].expand(3, 4, 4))
    assert ds.num_corrupt == 1
    assert [f.name for f in ds.corrupt_files] == ["2.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # already marked: skipped without a new warning
        assert torch.equal(ds[1][0], x) and ds.num_corrupt == 1


def test_last_corrupt_item_wraps_to_the_first_and_workers_share_the_count(
    folder_with_corrupt_files,
):
    _truncated_png(folder_with_corrupt_files / "3.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ImageFolderDataset(str(folder_with_corrupt_files), image_size=4, random_flip=False)
    assert len(ds) == 3  # 0.png and the truncated 2.png and 3.png
    loader = DataLoader(ds, batch_size=3, num_workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ((batch, labels),) = list(loader)
    first = _pixel((10, 10, 10))[:, None, None].expand(3, 4, 4)
    assert all(torch.allclose(batch[i].double(), first) for i in range(3))
    assert ds.num_corrupt == 2  # counted in the worker, seen here


def test_all_corrupt_raises(tmp_path):
    (tmp_path / "a.png").write_bytes(b"nope")
    with pytest.warns(UserWarning, match="a.png"):
        with pytest.raises(ValueError, match="none of the 1 images under .* is readable"):
            ImageFolderDataset(str(tmp_path), image_size=4)
    _truncated_png(tmp_path / "a.png")
    ds = ImageFolderDataset(str(tmp_path), image_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="none of the 1 images"):
            ds[0]


# ---- image modes and bit depths ----


def _mode_image(mode):
    """A 2x2 picture in `mode` and the uint8 RGB the dataset must make of it."""
    if mode == "I;16":
        values = np.array([[0, 256], [32768, 65535]], np.uint16)
        gray = np.array([[0, 1], [128, 255]])  # x * 255 / 65535, rounded: scaled, not clipped
        return Image.fromarray(values), np.repeat(gray[..., None], 3, 2)
    if mode == "F":
        values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
        return Image.fromarray(values), np.repeat(np.array([[0, 64], [128, 255]])[..., None], 3, 2)
    if mode == "RGBA":
        rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0]], [[0, 0, 255, 128]] * 2], np.uint8)
        half = round(255 * 128 / 255 + 255 * (1 - 128 / 255))  # blue over white at alpha 128/255
        expected = [[[255, 0, 0], [255, 255, 255]], [[127, 127, half]] * 2]
        return Image.fromarray(rgba, "RGBA"), np.array(expected)
    if mode == "LA":
        la = np.array([[[0, 255], [0, 0]], [[100, 255], [100, 51]]], np.uint8)
        gray = np.array([[0, 255], [100, round(100 * 0.2 + 255 * 0.8)]])
        return Image.fromarray(la, "LA"), np.repeat(gray[..., None], 3, 2)
    if mode == "P":
        image = Image.new("P", (2, 2))
        image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        image.putdata([0, 1, 1, 0])
        image.info["transparency"] = 0  # palette entry 0 is transparent: white
        return image, np.array([[[255] * 3, [10, 200, 30]], [[10, 200, 30], [255] * 3]])
    if mode == "CMYK":
        cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0]], [[0, 0, 0, 255], [0, 255, 255, 0]]])
        expected = [[[255, 255, 255], [0, 255, 255]], [[0, 0, 0], [255, 0, 0]]]
        return Image.fromarray(cmyk.astype(np.uint8), "CMYK"), np.array(expected)
    raise AssertionError(mode)


@pytest.mark.parametrize(
    "mode, suffix",
    [("I;16", ".png"), ("F", ".tif"), ("RGBA", ".png"), ("LA", ".png"), ("P", ".png"),
     ("CMYK", ".tif")],
)  # fmt: skip
def test_image_modes_and_bit_depths_are_converted_as_stated(tmp_path, mode, suffix):
    image, expected = _mode_image(mode)
    image.save(tmp_path / f"a{suffix}")
    with Image.open(tmp_path / f"a{suffix}") as reread:
        assert reread.mode == image.mode  # the file keeps its mode: the dataset converts it
    ds = ImageFolderDataset(str(tmp_path), image_size=2, random_flip=False)
    x, _ = ds[0]
    got = ((x + 1.0) * 127.5).round().permute(1, 2, 0).numpy()
    assert np.array_equal(got, expected), got


def test_wide_values_outside_their_range_are_refused_by_name(tmp_path):
    Image.fromarray(np.array([[0.0, 3.5]], np.float32)).save(tmp_path / "hdr.tif")
    Image.new("RGB", (2, 2), (9, 9, 9)).save(tmp_path / "ok.png")
    ds = ImageFolderDataset(str(tmp_path), image_size=1, random_flip=False)
    with pytest.warns(UserWarning, match=r"hdr\.tif .*F image with values in \[0, 3\.5\]"):
        x, _ = ds[0]
    assert torch.allclose(x.double(), _pixel((9, 9, 9))[:, None, None])


# ---- linked folders ----


def test_linked_class_folders_are_followed_and_named(tmp_path):
    _save(tmp_path / "data" / "ant" / "a.png", (0, 0, 255))
    _save(tmp_path / "elsewhere" / "bee" / "b.png", (255, 0, 0))
    _save(tmp_path / "elsewhere" / "bee" / "c.png", (255, 0, 0))
    (tmp_path / "data" / "bee").symlink_to(tmp_path / "elsewhere" / "bee")
    (tmp_path / "elsewhere" / "bee" / "loop").symlink_to(tmp_path / "data")  # walked once
    with pytest.warns(UserWarning, match=r"following linked folders in .*data: bee -> "):
        ds = ImageFolderDataset(str(tmp_path / "data"), image_size=4, random_flip=False)
    assert ds.class_names == ["ant", "bee"] and len(ds) == 3
    assert sorted(int(y) for _, y in (ds[i] for i in range(3))) == [0, 1, 1]


def test_a_link_to_nothing_and_an_empty_class_are_refused(tmp_path):
    _save(tmp_path / "data" / "ant" / "a.png", (0, 0, 255))
    (tmp_path / "data" / "bee").symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match=r"bee is a link to .*gone, which does not exist"):
        ImageFolderDataset(str(tmp_path / "data"), image_size=4)
    (tmp_path / "data" / "bee").unlink()
    (tmp_path / "data" / "bee").mkdir()
    (tmp_path / "data" / "bee" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*bee holds no readable images"):
        ImageFolderDataset(str(tmp_path / "data"), image_size=4)
