"""Inference: images depend on the seed and image index only (not on the number of processes),
and an interrupted run resumes to the same `.npz`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speed.config import ConfigError, load_config
from speed.runners.inference import _claim_png_dir, inference
from speed.runners.train import train

MAIN = str(Path(__file__).resolve().parents[2] / "main.py")


@pytest.fixture
def trained_run(tmp_path, demo_config, tiny_overrides):
    run = tmp_path / "run"
    train(load_config(demo_config, "train", tiny_overrides(run, steps=1) + ["sample_every=0"]))
    return run


@pytest.mark.slow
def test_one_and_two_processes_make_identical_images(trained_run, demo_config, tiny_overrides):
    overrides = tiny_overrides(trained_run, steps=1) + ["per_proc_batch_size=2"]
    single = np.load(inference(load_config(demo_config, "inference", overrides)))["arr_0"]
    other_dir = trained_run.parent / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        MAIN, "-c", demo_config, "-p", "inference", *overrides,
        f"ckpt_path={trained_run / 'train/checkpoints/0000001.pt'}",
        f"experiment_dir={other_dir}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    double = np.load(other_dir / "inference/0000001.npz")["arr_0"]
    assert np.array_equal(single, double)


def test_interrupted_inference_resumes_to_the_same_npz(trained_run, demo_config, tiny_overrides):
    cfg = load_config(demo_config, "inference", tiny_overrides(trained_run, steps=1))
    first = np.load(inference(cfg))
    png_dir = trained_run / "inference/0000001"
    kept = png_dir / "000000.png"
    kept_mtime = kept.stat().st_mtime_ns
    for name in ("000004.png", "000005.png"):  # as if killed before the last batch
        (png_dir / name).unlink()
    (trained_run / "inference/0000001.npz").unlink()
    second = np.load(inference(cfg))
    assert np.array_equal(first["arr_0"], second["arr_0"])
    assert np.array_equal(first["arr_1"], second["arr_1"])
    assert kept.stat().st_mtime_ns == kept_mtime  # finished batches are not redrawn


def test_sampler_options_are_part_of_the_recorded_settings(tmp_path, demo_config):
    png_dir = tmp_path / "pngs"
    plain = load_config(demo_config, "inference", [])
    _claim_png_dir(png_dir, plain)
    record = json.loads((png_dir / "settings.json").read_text())
    assert "sampler_options" not in record and record["eta"] == 1.0  # as recorded before
    _claim_png_dir(png_dir, plain)  # same settings: accepted
    (png_dir / "000000.png").write_bytes(b"")
    grid = ["sampler=dpm_solver++", "sampler_options.grid=time_uniform"]
    with pytest.raises(ConfigError, match="other settings"):
        _claim_png_dir(png_dir, load_config(demo_config, "inference", grid))
    _claim_png_dir(png_dir, load_config(demo_config, "inference", [*grid, "overwrite=true"]))
    record = json.loads((png_dir / "settings.json").read_text())
    assert record["sampler_options"] == {"grid": "time_uniform"}
    assert not (png_dir / "000000.png").exists()


def test_a_list_of_guidance_scales_is_refused_in_one_line_before_anything_is_written(
    trained_run, demo_config, tiny_overrides
):
    words = [*tiny_overrides(trained_run, steps=1), "guidance_scale=[1,2]"]
    with pytest.raises(ConfigError, match=r"-m guidance_scale=1,2") as error:
        inference(load_config(demo_config, "inference", words))
    assert "\n" not in str(error.value)
    assert not (trained_run / "inference").exists()
    words[-1] = "guidance_scale=[2.0]"  # one value in a list is one value
    npz = inference(load_config(demo_config, "inference", words))
    settings = json.loads((npz.with_suffix("") / "settings.json").read_text())
    assert settings["guidance_scale"] == [2.0]


def test_bf16_inference_records_its_precision_and_stays_close_to_fp32(
    trained_run, demo_config, tiny_overrides
):
    words = tiny_overrides(trained_run, steps=1)
    fp32 = np.load(inference(load_config(demo_config, "inference", words)))["arr_0"]
    png_dir = trained_run / "inference/0000001"
    assert "precision" not in json.loads((png_dir / "settings.json").read_text())
    with pytest.raises(ConfigError, match="other settings"):  # fp32 images are not reused
        inference(load_config(demo_config, "inference", [*words, "precision=bf16"]))
    cfg = load_config(demo_config, "inference", [*words, "precision=bf16", "overwrite=true"])
    bf16 = np.load(inference(cfg))["arr_0"]
    assert json.loads((png_dir / "settings.json").read_text())["precision"] == "bf16"
    saved = load_config(trained_run / "inference/config.yaml", "inference", [])
    assert saved.precision == "bf16"
    # The same noise through a one-step model (3 guided DDIM steps, eta 1): bf16 rounding moves
    # uint8 pixels by less than a level on average (bounds with margin; see test_generation for
    # the measured error in [-1, 1]).
    difference = np.abs(bf16.astype(int) - fp32)
    assert difference.mean() < 1.0 and difference.max() <= 32


def test_a_bad_precision_is_refused_in_one_line(main, demo_config, tmp_path, capsys):
    words = [f"experiment_dir={tmp_path}", "precision=fp8"]
    assert main(["-c", demo_config, "-p", "inference", *words]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "error: config key 'precision' expects one of fp32|bf16|fp16, got 'fp8' (command line)\n"
    )
