"""Inference: images depend on the seed and image index only (not on the number of processes),
and an interrupted run resumes to the same `.npz`."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluations.image_io import load_npz
from speed.config import ConfigError, load_config
from speed.run import DONE, RESUME, phase_state
from speed.run.outputs import read_provenance
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
    ckpt = tmp_path / "0000001.pt"
    ckpt.write_bytes(b"weights")
    plain = load_config(demo_config, "inference", [])
    _claim_png_dir(png_dir, plain, ckpt)
    record = json.loads((png_dir / "settings.json").read_text())
    assert "sampler_options" not in record and record["eta"] == 1.0  # as recorded before
    _claim_png_dir(png_dir, plain, ckpt)  # same settings: accepted
    (png_dir / "000000.png").write_bytes(b"")
    grid = ["sampler=dpm_solver++", "sampler_options.grid=time_uniform"]
    with pytest.raises(ConfigError, match="other settings"):
        _claim_png_dir(png_dir, load_config(demo_config, "inference", grid), ckpt)
    _claim_png_dir(png_dir, load_config(demo_config, "inference", [*grid, "overwrite=true"]), ckpt)
    record = json.loads((png_dir / "settings.json").read_text())
    assert record["sampler_options"] == {"grid": "time_uniform"}
    assert not (png_dir / "000000.png").exists()


def test_the_npz_records_what_made_it_and_evaluators_still_read_it(
    trained_run, demo_config, tiny_overrides, capsys
):
    cfg = load_config(demo_config, "inference", tiny_overrides(trained_run, steps=1))
    npz = inference(cfg)
    ckpt = trained_run / "train/checkpoints/0000001.pt"
    record = read_provenance(npz)
    assert record["checkpoint"] == str(ckpt.resolve())
    assert record["checkpoint_sha256"] == ckpt.with_name("0000001.pt.sha256").read_text().split()[0]
    assert record["num_samples"] == 6 and record["sampler"] == "ddim" and record["seed"] == 0
    assert record["guidance_scale"] == 2.0 and record["sample_classes"] == [0, 3]
    source = load_npz(npz)  # the evaluations package reads arr_0 / arr_1 and nothing else
    assert source.images.shape == (6, 28, 28, 3) and source.images.dtype == np.uint8
    assert source.labels.tolist() == [0, 3, 0, 3, 0, 3]
    with np.load(npz, allow_pickle=False) as data:  # no pickle needed for any entry
        assert sorted(data) == ["arr_0", "arr_1", "provenance"]
    mtime = npz.stat().st_mtime_ns
    capsys.readouterr()
    assert inference(cfg) == npz  # the same config again: nothing to do, nothing rewritten
    assert "already holds these 6 images" in capsys.readouterr().out
    assert npz.stat().st_mtime_ns == mtime


def test_a_larger_num_samples_draws_the_rest_and_reuses_full_batches(
    trained_run, demo_config, tiny_overrides
):
    words = tiny_overrides(trained_run, steps=1)  # batches of 4
    six = np.load(inference(load_config(demo_config, "inference", words)))["arr_0"]
    cfg = load_config(demo_config, "inference", [*words, "num_samples=8"])
    assert phase_state("inference", cfg) == RESUME
    eight = np.load(inference(cfg))
    assert (
        eight["arr_0"].shape[0] == 8
        and read_provenance(trained_run / "inference/0000001.npz")["num_samples"] == 8
    )
    assert np.array_equal(eight["arr_0"][:4], six[:4])  # the full first batch is reused
    assert phase_state("inference", cfg) == DONE


def test_images_do_not_depend_on_the_num_samples_of_earlier_runs(
    tmp_path, trained_run, demo_config, tiny_overrides
):
    """The sampler's noise is drawn per batch: image 4 made in a batch of 4 (num_samples=8)
    differs from image 4 made in a batch of 1 (num_samples=5), so a run of 5 after a run of 8
    must draw its last batch again to match a fresh run of 5."""
    words = [*tiny_overrides(trained_run, steps=1), "num_samples=5"]
    ckpt = f"ckpt_path={trained_run / 'train/checkpoints/0000001.pt'}"
    fresh = np.load(inference(load_config(demo_config, "inference", [*words, ckpt])))["arr_0"]
    other = [*words, ckpt, f"experiment_dir={tmp_path / 'other'}"]
    inference(load_config(demo_config, "inference", [*other, "num_samples=8"]))
    after = np.load(inference(load_config(demo_config, "inference", other)))["arr_0"]
    assert np.array_equal(after, fresh)


def test_partial_files_of_a_killed_run_are_removed(trained_run, demo_config, tiny_overrides):
    png_dir = trained_run / "inference/0000001"
    png_dir.mkdir(parents=True)
    stale = [png_dir / ".000003.png.k2j4.tmp", trained_run / "inference/.0000001.npz.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    inference(load_config(demo_config, "inference", tiny_overrides(trained_run, steps=1)))
    assert not any(path.exists() for path in stale)


def test_a_list_of_guidance_scales_is_refused_in_one_line_before_anything_is_written(
    trained_run, demo_config, tiny_overrides
):
    words = [*tiny_overrides(trained_run, steps=1), "guidance_scale=[1,2]"]
    with pytest.raises(
        ConfigError, match=r"once with guidance_scale=1 and guidance_scale=2 in"
    ) as error:
        inference(load_config(demo_config, "inference", words))
    assert "\n" not in str(error.value)
    assert not (trained_run / "inference").exists()
    words[-1] = "guidance_scale=[2.0]"  # one value in a list is one value
    npz = inference(load_config(demo_config, "inference", words))
    settings = json.loads((npz.with_suffix("") / "settings.json").read_text())
    assert settings["guidance_scale"] == [2.0]


def test_bf16_inference_goes_beside_fp32_and_stays_close_to_it(
    trained_run, demo_config, tiny_overrides
):
    words = tiny_overrides(trained_run, steps=1)
    fp32 = np.load(inference(load_config(demo_config, "inference", words)))["arr_0"]
    png_dir = trained_run / "inference/0000001"
    assert "precision" not in json.loads((png_dir / "settings.json").read_text())
    npz = inference(load_config(demo_config, "inference", [*words, "precision=bf16"]))
    assert npz == trained_run / "inference/0000001-precision=bf16.npz"  # fp32's are not reused
    bf16 = np.load(npz)["arr_0"]
    assert json.loads((npz.with_suffix("") / "settings.json").read_text())["precision"] == "bf16"
    assert "precision" not in json.loads((png_dir / "settings.json").read_text())
    saved = load_config(trained_run / "inference/config.yaml", "inference", [])
    assert saved.precision == "bf16"  # the config of the newest run
    # The same noise through a one-step model (3 guided DDIM steps, eta 1): bf16 rounding moves
    # uint8 pixels by less than a level on average (bounds with margin; see test_generation for
    # the measured error in [-1, 1]).
    difference = np.abs(bf16.astype(int) - fp32)
    assert difference.mean() < 1.0 and difference.max() <= 32
    cfg = load_config(demo_config, "inference", [*words, "precision=bf16", "overwrite=true"])
    assert inference(cfg) == trained_run / "inference/0000001.npz"  # takes the plain name
    assert json.loads((png_dir / "settings.json").read_text())["precision"] == "bf16"
    assert np.array_equal(np.load(trained_run / "inference/0000001.npz")["arr_0"], bf16)


def test_other_settings_of_one_checkpoint_sit_side_by_side(
    main, trained_run, demo_config, tiny_overrides, capsys
):
    """After the demo, `-p inference precision=bf16 compile=true` (here without compile) and a
    guidance sweep run one after another in the same experiment, each into its own output, and
    the default output and its records stay as they were."""
    words = tiny_overrides(trained_run, steps=1)
    assert main(["-c", demo_config, "-p", "inference", *words]) == 0
    folder = trained_run / "inference"
    default = {
        p: p.read_bytes() for p in (folder / "0000001.npz", folder / "0000001/settings.json")
    }
    capsys.readouterr()
    assert main(["-c", demo_config, "-p", "inference", *words, "precision=bf16"]) == 0
    out = capsys.readouterr().out
    assert "so these go to 0000001-precision=bf16 (precision: fp32 -> bf16)" in out
    for scale in (1, 4):
        assert main(["-c", demo_config, "-p", "inference", *words, f"guidance_scale={scale}"]) == 0
    out = capsys.readouterr().out
    assert "guidance_scale: 2.0 -> 4" in out
    assert "other outputs of 0000001.pt: 0000001, 0000001-guidance_scale=1, " in out
    assert sorted(p.name for p in folder.glob("*.npz")) == [
        "0000001-guidance_scale=1.npz",
        "0000001-guidance_scale=4.npz",
        "0000001-precision=bf16.npz",
        "0000001.npz",
    ]
    assert all(path.read_bytes() == data for path, data in default.items())
    assert read_provenance(folder / "0000001-guidance_scale=4.npz")["guidance_scale"] == 4
    cfg = load_config(demo_config, "inference", [*words, "guidance_scale=4"])
    assert phase_state("inference", cfg) == DONE


def test_a_bad_precision_is_refused_in_one_line(main, demo_config, tmp_path, capsys):
    words = [f"experiment_dir={tmp_path}", "precision=fp8"]
    assert main(["-c", demo_config, "-p", "inference", *words]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "error: config key 'precision' expects one of fp32|bf16|fp16, got 'fp8' (command line)\n"
    )
