"""Never lose or poison a run: one run per folder, checked checkpoints with a fallback, runs that
cannot take a step refused, inference that validates before deleting and never writes NaN
pictures, one-line messages for what the user can fix, and safe loading of checkpoints."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speed.config import load_config
from speed.config_schema import RootConfig
from speed.errors import DataError, DiskFullError, RunLockedError, user_message
from speed.models import load_checkpoint
from speed.models.loading import checksum_path, save_checkpoint
from speed.run import RunDir, RunLock, list_checkpoints
from speed.runners.inference import inference
from speed.runners.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_config, tiny_overrides):
    """A 2-step demo run with checkpoints 0000001.pt and 0000002.pt (copy it before changing)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(load_config(demo_config, "train", tiny_overrides(run)))
    return run


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def one_line_error(main, capsys, words) -> str:
    """main(words) must exit 2 with one `error: ...` line (after any progress bar) and no
    traceback; returns the line."""
    assert main(words) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert "Traceback" not in err and line.startswith("error: ") and err.endswith(line + "\n"), err
    return line


def corrupt(path: Path, offset: int = 2048, size: int = 4096) -> None:
    """Overwrite `size` bytes inside `path` with garbage (the file keeps its length)."""
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = os.urandom(min(size, len(data) - offset))
    path.write_bytes(bytes(data))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def disk_full(monkeypatch) -> None:
    """Every atomic write (checkpoints, PNGs, configs, .npz) fails as on a full disk."""

    def fail(path, flags):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("speed.utils.atomic._fsync", fail)


# ---- 1. one run per folder ----


def test_a_second_training_into_a_locked_run_is_refused(
    main, demo_config, tiny_overrides, tmp_path, capsys
):
    run = tmp_path / "run"
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(run)]
    lock = RunLock(run / "train").acquire()  # the first run, still going
    err = one_line_error(main, capsys, words)
    assert "in use by another run" in err and f"pid {os.getpid()}" in err
    assert list_checkpoints(run / "train/checkpoints") == []
    assert not (run / "train/config.yaml").exists() and not (run / "train/logs").exists()
    lock.release()
    assert main(words) == 0  # free again once the first run ends
    assert not (run / "train/.lock").exists()  # released on exit


HOLD_LOCK = """
import sys, time
from speed.run import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_held_by_another_process_is_refused_until_it_dies(
    main, run, demo_config, tiny_overrides, capsys
):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run / "train")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        words = ["-c", demo_config, "-p", "train", *tiny_overrides(run, 3), "resume=true"]
        assert f"(pid {holder.pid} on" in one_line_error(main, capsys, words)
        assert [p.name for p in list_checkpoints(run / "train/checkpoints")][-1] == "0000002.pt"
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="taking over"):  # killed: its lock is stale
        assert main(words) == 0
    assert list_checkpoints(run / "train/checkpoints")[-1].name == "0000003.pt"


def test_inference_and_sample_folders_are_locked(main, run, demo_config, tiny_overrides, capsys):
    for phase in ("inference", "sample"):
        with RunLock(RunDir(run).phase(phase)):
            pass  # a context manager too
        lock = RunLock(RunDir(run).phase(phase)).acquire()
        err = one_line_error(main, capsys, ["-c", demo_config, "-p", phase, *tiny_overrides(run)])
        assert "in use by another run" in err
        lock.release()
    assert not list((run / "inference").glob("*/*.png"))


def test_a_stale_lock_of_a_dead_process_is_taken_over(run, demo_config, tiny_overrides):
    lock_file = run / "train/.lock"
    lock_file.write_text(f'{{"host": "{os.uname().nodename}", "pid": {dead_pid()}}}')
    cfg = load_config(demo_config, "train", tiny_overrides(run, steps=3) + ["resume=true"])
    with pytest.warns(UserWarning, match="taking over"):
        assert train(cfg).name == "0000003.pt"
    assert not lock_file.exists()


def test_the_lock_is_released_when_the_run_raises(run, demo_config, tiny_overrides, monkeypatch):
    monkeypatch.setattr("speed.runners.train._loop", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train(load_config(demo_config, "train", tiny_overrides(run, 3) + ["resume=true"]))
    assert not (run / "train/.lock").exists()
    RunLock(run / "train").acquire().release()


# ---- 2. and 4. corrupt, truncated, empty checkpoints ----


def test_every_checkpoint_has_a_checksum_sidecar(run):
    for ckpt in list_checkpoints(run / "train/checkpoints"):
        digest, name = checksum_path(ckpt).read_text().split()
        assert name == ckpt.name and len(digest) == 64


@pytest.mark.parametrize(
    "damage",
    [
        corrupt,
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        lambda p: p.write_bytes(b""),
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_resume_skips_a_broken_newest_checkpoint(run, demo_config, tiny_overrides, damage):
    newest = run / "train/checkpoints/0000002.pt"
    damage(newest)
    cfg = load_config(demo_config, "train", tiny_overrides(run, steps=3) + ["resume=true"])
    with pytest.warns(UserWarning, match="skipping .*0000002.pt"):
        last = train(cfg)
    state = load_checkpoint(last)  # checksum verified, every tensor finite
    assert state["step"] == 3
    assert load_checkpoint(newest)["step"] == 2  # rewritten from step 1, whole again
    assert all(torch.isfinite(v).all() for v in state["ema"].values() if v.is_floating_point())


def test_resume_with_no_readable_checkpoint_is_one_line(
    main, run, demo_config, tiny_overrides, capsys
):
    for ckpt in list_checkpoints(run / "train/checkpoints"):
        ckpt.write_bytes(b"")
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(run, 3), "resume=true"]
    with pytest.warns(UserWarning):
        err = one_line_error(main, capsys, words)
    assert "none of the 2 checkpoints loads" in err


def test_inference_refuses_a_corrupt_checkpoint(main, run, demo_config, tiny_overrides, capsys):
    corrupt(run / "train/checkpoints/0000002.pt")
    err = one_line_error(main, capsys, ["-c", demo_config, "-p", "inference", *tiny_overrides(run)])
    assert "0000002.pt is corrupt" in err and "sha256" in err
    assert not (run / "inference/0000002").exists()


def test_inference_refuses_non_finite_weights(main, run, demo_config, tiny_overrides, capsys):
    path = run / "train/checkpoints/0000002.pt"
    state = load_checkpoint(path)
    next(iter(state["ema"].values())).fill_(float("nan"))
    save_checkpoint(state, path)  # a valid checksum of NaN weights
    err = one_line_error(main, capsys, ["-c", demo_config, "-p", "inference", *tiny_overrides(run)])
    assert "non-finite weights" in err and "ema." in err
    assert not (run / "inference/0000002").exists()


def test_inference_never_writes_images_of_nans(
    main, run, demo_config, tiny_overrides, capsys, monkeypatch
):
    from speed.autoencoders import Identity

    monkeypatch.setattr(Identity, "decode", lambda self, z: z * float("nan"))
    err = one_line_error(main, capsys, ["-c", demo_config, "-p", "inference", *tiny_overrides(run)])
    assert "NaN/inf" in err
    assert not list(run.glob("inference/0000002/*.png"))
    assert not (run / "inference/0000002/settings.json").exists()


# ---- 3. runs that cannot take a step ----


def test_a_dataset_smaller_than_one_batch_is_refused(
    main, demo_config, tiny_overrides, tmp_path, capsys
):
    run = tmp_path / "run"
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(run), "data.batch_size=1000000"]
    err = one_line_error(main, capsys, words)
    assert "fewer than one global batch" in err
    assert list_checkpoints(run / "train/checkpoints") == []


@pytest.mark.parametrize(
    "word", ["max_training_steps=-1", "ckpt_every=0", "log_every=0", "num_samples=0"]
)
def test_non_positive_lengths_are_config_errors(
    main, demo_config, tiny_overrides, tmp_path, capsys, word
):
    key = word.split("=")[0]
    for phase in ("config", "train"):
        words = ["-c", demo_config, "-p", phase, *tiny_overrides(tmp_path), word]
        assert f"'{key}' must be >= 1" in one_line_error(main, capsys, words)
    assert not (tmp_path / "train").exists()


# ---- 5. inference: validate, then delete; no stale claims; atomic PNGs ----


def test_overwrite_with_a_bad_setting_deletes_nothing(
    main, run, demo_config, tiny_overrides, capsys
):
    assert main(["-c", demo_config, "-p", "inference", *tiny_overrides(run)]) == 0
    pngs = sorted((run / "inference/0000002").glob("*.png"))
    assert len(pngs) == 6
    for bad in (["sampler=foo"], ["seed=1", "num_steps=5000"]):
        words = ["-c", demo_config, "-p", "inference", *tiny_overrides(run), "overwrite=true", *bad]
        one_line_error(main, capsys, words)
        assert sorted((run / "inference/0000002").glob("*.png")) == pngs


def test_a_crashed_inference_leaves_no_claim(run, demo_config, tiny_overrides, monkeypatch):
    cfg = load_config(demo_config, "inference", tiny_overrides(run))
    with monkeypatch.context() as patch:
        patch.setattr("speed.runners.inference.generate", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            inference(cfg)
    assert not (run / "inference/0000002/settings.json").exists()
    other = load_config(demo_config, "inference", tiny_overrides(run) + ["seed=7"])
    assert inference(other).is_file()  # not refused as "images sampled with other settings"
    assert not (run / "inference/.lock").exists()


def test_a_png_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from PIL import Image

    from speed.utils.images import save_png

    def half_then_die(self, fp, *args, **kwargs):
        header = b"\x89PNG\r\n\x1a\n"  # a truncated PNG, into a file or an in-memory buffer
        fp.write(header) if hasattr(fp, "write") else Path(fp).write_bytes(header)
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "000000.png")
    assert list(tmp_path.iterdir()) == []  # no truncated PNG that resume would take as done


# ---- 6. one line where one line is due ----


def test_broken_checkpoint_files_are_one_line(
    main, demo_config, tiny_overrides, tmp_path, capsys, run
):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    truncated = tmp_path / "truncated.pt"
    good = (run / "train/checkpoints/0000002.pt").read_bytes()
    truncated.write_bytes(good[: len(good) // 3])
    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    expected = {
        text: "not a torch checkpoint (it is a text file)",
        truncated: "corrupt or truncated",
        listed: "holds a list",
    }
    for path, message in expected.items():
        for phase in ("inference", "train"):
            words = [
                "-c",
                demo_config,
                "-p",
                phase,
                *tiny_overrides(tmp_path / phase),
                f"ckpt_path={path}",
            ]
            err = one_line_error(main, capsys, words)
            assert message in err and path.name in err


def test_a_full_disk_is_one_line_and_loses_nothing(
    main, run, demo_config, tiny_overrides, capsys, monkeypatch
):
    before = {p.name: p.read_bytes() for p in (run / "train/checkpoints").iterdir()}
    disk_full(monkeypatch)
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(run, 4), "resume=true"]
    err = one_line_error(main, capsys, words)
    assert "disk full writing" in err
    after = {p.name: p.read_bytes() for p in (run / "train/checkpoints").iterdir()}
    assert after == before  # no temporary files, no damaged checkpoint
    assert not (run / "train/.lock").exists()
    raw = OSError(errno.ENOSPC, "No space left on device", "metrics.jsonl")
    assert user_message(raw).startswith("disk full writing metrics.jsonl")
    assert isinstance(DiskFullError("x"), OSError)


def test_the_non_finite_loss_abort_is_one_line(
    main, demo_config, tiny_overrides, tmp_path, capsys, monkeypatch
):
    from speed.diffusion.gaussian_diffusion import GaussianDiffusion

    losses = GaussianDiffusion.training_losses

    def nan_losses(self, *args, **kwargs):
        terms = losses(self, *args, **kwargs)
        return {**terms, "loss": terms["loss"] * float("nan")}

    monkeypatch.setattr(GaussianDiffusion, "training_losses", nan_losses)
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(tmp_path), "max_nonfinite=1"]
    assert "NaN/inf for 1 steps" in one_line_error(main, capsys, words)


def test_an_image_folder_with_nothing_decodable_is_one_line(
    main, demo_config, tiny_overrides, tmp_path, capsys
):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i}.png").write_bytes(b"not a png")
    node = "_target_: speed.data.ImageFolderDataset, image_size: 28, class_cond: false"
    data = f"data={{{node}, path: {folder}, batch_size: 4}}"
    words = [
        "-c",
        demo_config,
        "-p",
        "train",
        *tiny_overrides(tmp_path / "run"),
        data,
        "num_classes=0",
    ]
    with pytest.warns(UserWarning, match=r"leaving out 8 file\(s\) that are no images"):
        err = one_line_error(main, capsys, words)
    assert "none of the 8 images" in err and "is readable" in err


def test_a_text_file_named_npz_is_one_line(main, demo_config, tiny_overrides, tmp_path, capsys):
    from evaluations import fid

    fake = tmp_path / "fake.npz"
    fake.write_text("hello\n")
    data = f"data={{_target_: speed.data.NpzDataset, path: {fake}, batch_size: 4}}"
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(tmp_path / "run"), data]
    assert "not a readable .npz archive" in one_line_error(main, capsys, words)
    assert fid.main([str(fake), str(fake)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fake.npz is not a readable .npz archive" in err
    assert "pickled data" not in err


def test_print_config_applies_the_diffusion_range_checks(main, demo_config, capsys):
    words = ["-c", demo_config, "-p", "config", "diffusion.faster=true", "diffusion.lam=5"]
    assert "lam=5 must lie in [0.5, 1]" in one_line_error(main, capsys, words)


def test_fid_on_fewer_images_than_feature_dimensions_warns():
    from evaluations.metrics import feature_statistics

    with pytest.warns(UserWarning, match="5 images of 2048-d features"):
        feature_statistics(np.random.default_rng(0).normal(size=(5, 2048)))


def test_evaluation_cli_keeps_the_traceback_of_a_bug(monkeypatch):
    from speed.errors import run_cli

    def buggy():
        raise KeyError("an internal bug")

    with pytest.raises(KeyError):
        run_cli(buggy)


# ---- 7. safe loading ----


class _Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_malicious_checkpoint_is_refused_unless_trusted(
    main, run, demo_config, tiny_overrides, tmp_path, capsys
):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    state = load_checkpoint(run / "train/checkpoints/0000002.pt")
    torch.save({**state, "payload": _Payload(marker)}, evil)

    with pytest.raises(DataError, match="trust_checkpoint=true"):
        load_checkpoint(evil)
    words = ["-c", demo_config, "-p", "inference", *tiny_overrides(run), f"ckpt_path={evil}"]
    err = one_line_error(main, capsys, words)
    assert "holds objects besides tensors" in err and "trust_checkpoint=true" in err
    assert not marker.exists()  # nothing ran

    with pytest.warns(UserWarning, match="trust_checkpoint=true"):
        assert main(words + ["trust_checkpoint=true"]) == 0
    assert marker.exists()


def test_training_checkpoints_load_weights_only(run):
    path = run / "train/checkpoints/0000002.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["step"] == 2


# ---- 8. wandb is not started unless asked ----


def test_wandb_is_off_unless_asked(demo_config):
    assert RootConfig().wandb == "disabled"
    assert load_config(demo_config, "train").wandb == "disabled"
    assert load_config(demo_config, "train", ["wandb=offline"]).wandb == "offline"


def test_lock_errors_are_user_errors():
    assert user_message(RunLockedError("x")) == "x"
