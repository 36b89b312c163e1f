"""PSNR and SSIM (torchmetrics) on pairs whose values are known, and the super-resolution score
table of `python -m evaluations.super_res` (model and bicubic rows, FID by the registry)."""

import json

import numpy as np
import pytest

from evaluations import super_res
from evaluations.evaluate import compute_metrics
from evaluations.image_io import ImageSource
from evaluations.metrics import psnr, ssim
from speed.errors import DataError

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # SSIM's constants for 8-bit images


def test_identical_images_have_infinite_psnr_and_ssim_one(random_images):
    images = random_images(0, n=3, size=16)
    assert np.all(np.isinf(psnr(images, images)))
    np.testing.assert_allclose(ssim(images, images), 1.0, atol=1e-12)


def test_psnr_of_a_known_mse(random_images):
    reference = random_images(1, n=2, size=16).astype(np.float64)
    shifted = reference.copy()
    shifted[0] += 10.0  # MSE 100
    shifted[1, ::2] += 20.0  # every other row: MSE 200
    expected = [10 * np.log10(255**2 / 100), 10 * np.log10(255**2 / 200)]
    np.testing.assert_allclose(psnr(shifted, reference), expected, rtol=1e-7)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    """Zero variance leaves SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)."""
    a = np.full((1, 16, 16, 1), 100.0)
    b = np.full((1, 16, 16, 1), 120.0)
    expected = (2 * 100 * 120 + C1) / (100**2 + 120**2 + C1)
    np.testing.assert_allclose(ssim(a, b), [expected], rtol=1e-9)
    assert expected < 1


def test_pairs_of_other_shapes_are_refused(random_images):
    with pytest.raises(DataError, match="one shape"):
        psnr(random_images(0, n=2, size=16), random_images(0, n=3, size=16))
    with pytest.raises(DataError, match="sides >= 11"):
        ssim(random_images(0, n=2, size=8), random_images(0, n=2, size=8))


def test_the_table_scores_model_and_floor(tmp_path, random_images, tiny_extractor_cls, capsys):
    reference = random_images(2, n=6, size=16)
    model = np.clip(reference.astype(int) + 3, 0, 255).astype(np.uint8)
    floor = np.clip(reference.astype(int) + 12, 0, 255).astype(np.uint8)
    for name, images in (("ref", reference), ("model", model), ("floor", floor)):
        np.savez(tmp_path / f"{name}.npz", arr_0=images)
    out = tmp_path / "scores.json"
    args = [str(tmp_path / f"{n}.npz") for n in ("ref", "model")]
    assert (
        super_res.main(
            args + ["--floor", str(tmp_path / "floor.npz"), "--no-fid", "--out", str(out)]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert rows["model"]["psnr"] == pytest.approx(np.mean(psnr(model, reference)))
    assert rows["bicubic"]["ssim"] == pytest.approx(np.mean(ssim(floor, reference)))
    assert rows["model"]["psnr"] > rows["bicubic"]["psnr"] and "fid" not in rows["model"]
    printed = capsys.readouterr().out
    assert "6 pairs" in printed and "bicubic" in printed

    sources = {n: ImageSource(n, a) for n, a in (("model", model), ("bicubic", floor))}
    extractor = tiny_extractor_cls()
    scored = super_res.score_sets(ImageSource("ref", reference), sources, extractor, progress=False)
    fid = compute_metrics(
        ImageSource("ref", reference), sources["bicubic"], extractor, ("fid",), progress=False
    )
    assert scored["bicubic"]["fid"] == pytest.approx(fid["fid"]["value"])


def test_unpaired_sets_are_a_one_line_error(tmp_path, random_images, capsys):
    np.savez(tmp_path / "ref.npz", arr_0=random_images(0, n=4, size=16))
    np.savez(tmp_path / "fake.npz", arr_0=random_images(0, n=3, size=16))
    assert super_res.main([str(tmp_path / "ref.npz"), str(tmp_path / "fake.npz"), "--no-fid"]) == 2
    assert "they must pair one to one" in capsys.readouterr().err
