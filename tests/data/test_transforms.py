"""ADM center crop, [-1, 1] conversion."""

import numpy as np
import torch
from PIL import Image

from speed.data.transforms import center_crop_arr, to_tensor


def _column_ramp(width: int, height: int, value_of_column) -> Image.Image:
    row = np.array([value_of_column(j) for j in range(width)], np.uint8)
    return Image.fromarray(np.repeat(row[None, :, None], height, 0).repeat(3, 2))


def test_wide_image_is_cropped_to_its_central_columns():
    image = _column_ramp(40, 20, lambda j: 6 * j)  # short side = 20: no resize
    out = center_crop_arr(image, 20)
    assert out.shape == (20, 20, 3)
    assert np.array_equal(out[0, :, 0], 6 * np.arange(10, 30))


def test_large_image_is_box_halved_then_cropped():
    # Columns come in equal pairs, so BOX halving keeps exactly the value 4k for column k.
    image = _column_ramp(80, 40, lambda j: 4 * (j // 2))
    out = center_crop_arr(image, 20)  # 80x40 -> 40x20 (halved), then crop columns 10..29
    assert out.shape == (20, 20, 3)
    assert np.array_equal(out[5, :, 1], 4 * np.arange(10, 30))


def test_tall_image_short_side_resized_to_size():
    image = Image.new("RGB", (30, 50), (10, 200, 90))
    out = center_crop_arr(image, 16)  # 30 < 32: no halving; bicubic to 16x27, crop rows 5..20
    assert out.shape == (16, 16, 3)
    assert np.all(out == np.array([10, 200, 90], np.uint8))


def test_to_tensor_maps_0_and_255_to_minus_one_and_one():
    arr = np.array([[[0, 255, 51]]], np.uint8)  # [1, 1, 3]
    x = to_tensor(arr)
    assert x.shape == (3, 1, 1) and x.dtype == torch.float32
    np.testing.assert_allclose(x.flatten().numpy(), [-1.0, 1.0, 51 / 127.5 - 1.0], atol=1e-7)
    assert to_tensor(np.zeros((4, 5), np.uint8)).shape == (1, 4, 5)
