"""benchmarks/sampling.py on a tiny DiT in pixel space: the same images whatever the batching,
scoring against a reference, the on-demand domain classifier, and the report."""

import numpy as np
import pytest
import sampling

from evaluations.domain_classifier import DomainFeatures, train_domain_classifier
from evaluations.image_io import ImageSource


def run(tiny, chosen, batch_size):
    model, diffusion, autoencoder, noise, labels = tiny
    return sampling.run_settings(
        model,
        diffusion,
        autoencoder,
        noise,
        labels,
        chosen,
        batch_size=batch_size,
        seed=0,
        guidance_scale=2.0,
        clip_denoised=True,
    )


def test_settings_draw_reproducible_images_and_deterministic_ones_ignore_the_batching(tiny):
    chosen = [("ddpm", 4, {}), ("dpm_solver++", 3, {})]
    first, again = run(tiny, chosen, batch_size=6), run(tiny, chosen, batch_size=6)
    assert [r["setting"] for r in first] == ["ddpm-4", "dpm_solver++-3"]
    for a, b in zip(first, again):
        assert a["images"].shape == (6, 8, 8, 1) and a["images"].dtype == np.uint8
        assert a["sec_per_image"] > 0
        np.testing.assert_array_equal(a["images"], b["images"])
    in_two_batches = run(tiny, [("dpm_solver++", 3, {})], batch_size=4)[0]["images"]
    assert np.abs(in_two_batches.astype(int) - first[1]["images"]).max() <= 1
    assert np.abs(first[0]["images"].astype(int) - first[1]["images"]).max() > 10


def test_sampler_options_reach_the_sampler_and_name_the_setting(tiny):
    deterministic, stochastic = run(tiny, [("ddim", 3, {}), ("ddim", 3, {"eta": 1.0})], 6)
    assert [deterministic["setting"], stochastic["setting"]] == ["ddim-3", "ddim-3 eta=1"]
    assert np.abs(deterministic["images"].astype(int) - stochastic["images"]).max() > 10
    grids = run(tiny, [("dpm_solver++", 3, {}), ("dpm_solver++", 3, {"grid": "time_uniform"})], 6)
    assert grids[1]["setting"] == "dpm_solver++-3 grid=time_uniform"
    assert np.abs(grids[0]["images"].astype(int) - grids[1]["images"]).max() > 0


def test_model_calls_are_counted_per_image(tiny):
    rows = run(tiny, [("pndm", 4, {}), ("plms", 3, {}), ("euler_ancestral", 3, {})], batch_size=4)
    assert [r["model_calls"] for r in rows] == [4 + 9, 3 + 1, 3]  # two batches of the 6 images


def test_rows_pick_settings_by_name():
    assert sampling.settings(False, ["pndm-10", "ddim-25 eta=0"]) == [
        ("pndm", 10, {}),
        ("ddim", 25, {"eta": 0.0}),
    ]
    assert sampling.settings(True) == sampling.SETTINGS[1:]
    with pytest.raises(ValueError, match="unknown \\['pndm-11'\\]"):
        sampling.settings(False, ["pndm-11"])


def test_score_is_zero_for_the_reference_itself(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 8, 8), dtype=np.uint8)
    labels = np.arange(24) % 3
    train_domain_classifier(images, labels, tmp_path / "d.pt", epochs=1, progress=False)
    extractor = DomainFeatures(tmp_path / "d.pt")
    reference = ImageSource("ref", images[..., None], labels)
    rows = [
        {"setting": "same", "images": images[..., None]},
        {"setting": "other", "images": 255 - images[..., None]},
    ]
    sampling.score(
        rows, sampling.source_stats(reference, extractor, progress=False), extractor, labels
    )
    assert rows[0]["fid"] == pytest.approx(0, abs=1e-9) and rows[1]["fid"] > 1e-6
    assert 0 <= rows[0]["class_accuracy"] <= 1


def test_checkpoint_errors_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="make demo"):
        sampling.checkpoint_and_config(None)
    ckpt = tmp_path / "run" / "train" / "checkpoints" / "0000010.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="config.yaml not found"):
        sampling.checkpoint_and_config(ckpt)
    (ckpt.parent.parent / "config.yaml").write_text("{}")
    assert sampling.checkpoint_and_config(ckpt) == (ckpt, ckpt.parent.parent / "config.yaml")


def test_report_table_and_plot(tmp_path):
    rows = [
        {
            "setting": "ddim-25",
            "num_steps": 25,
            "model_calls": 25,
            "sec_per_image": 0.02,
            "fid": 12.5,
            "class_accuracy": 0.8,
        },
        {
            "setting": "pndm-10",
            "num_steps": 10,
            "model_calls": 19,
            "sec_per_image": 0.008,
            "fid": 14.0,
        },
    ]
    meta = {
        "device": "cpu",
        "threads": 1,
        "quick": False,
        "checkpoint": "c.pt",
        "params": 4.2e6,
        "side": 28,
        "channels": 1,
        "num": 256,
        "guidance_scale": 2.0,
        "batch_size": 128,
        "reference": "2000 real images",
        "features": "domain",
        "extractor_note": "FID-like",
        "torch": "x",
        "date": "d",
        "loadavg_before": [],
        "loadavg_after": [],
        "note": "",
    }
    table = sampling.markdown(rows, meta)
    assert "| ddim-25 | 25 | 0.0200 | 50.0 | 12.50 | 0.800 |" in table
    assert "| pndm-10 | 19 | 0.0080 | 125.0 | 14.00 | - |" in table
    assert "FID against 2000 real images with domain features" in table
    sampling.plot(rows, meta, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
