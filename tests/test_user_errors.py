"""What the operating system says about the user's paths is one line naming the file: a full
disk inside torch.save or an .npz write, no permission, a read-only file system, a file that
is not a checkpoint or a folder given as one; and no work is lost on the way."""

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from speed.config import load_config
from speed.errors import user_message
from speed.runners.train import train
from speed.utils.atomic import atomic_write


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_config, tiny_overrides):
    run = tmp_path_factory.mktemp("trained") / "run"
    train(load_config(demo_config, "train", tiny_overrides(run)))
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def one_line(main, capsys, words) -> str:
    assert main(words) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert "Traceback" not in err and line.startswith("error: ") and err.endswith(line + "\n")
    return line


class FullDisk:
    """A file whose writes fail as on a full disk after `room` bytes reached the real file."""

    def __init__(self, path, mode="wb", room=1000):
        self.file, self.room = open(path, mode), room

    def write(self, data):
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_full_disk_inside_torch_save_is_one_line_and_loses_nothing(
    main, run, demo_config, tiny_overrides, capsys, monkeypatch
):
    before = files_of(run / "train/checkpoints")
    monkeypatch.setattr("speed.models.loading.open", FullDisk, raising=False)
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(run, 4), "resume=true"]
    line = one_line(main, capsys, words)
    assert line.startswith(f"error: disk full writing {run}/train/checkpoints/0000003.pt")
    assert files_of(run / "train/checkpoints") == before  # no temporary file, nothing replaced


def test_a_full_disk_writing_the_npz_is_one_line(
    main, run, demo_config, tiny_overrides, capsys, monkeypatch
):
    monkeypatch.setattr("speed.runners.inference.open", FullDisk, raising=False)
    words = ["-c", demo_config, "-p", "inference", *tiny_overrides(run)]
    line = one_line(main, capsys, words)
    assert line.startswith("error: disk full writing ") and "0000002.npz" in line
    assert not list((run / "inference").glob("*.npz")) + list((run / "inference").glob(".*tmp"))


@pytest.mark.parametrize(
    "code,hint",
    [
        (errno.EACCES, "check its permissions"),
        (errno.EPERM, "check its permissions"),
        (errno.EROFS, "read-only"),
        (errno.ENOTDIR, "is a file, not a folder"),
        (errno.ENAMETOOLONG, "shorten the path"),
    ],
)
def test_os_errors_of_a_write_name_the_target_in_one_line(tmp_path, monkeypatch, code, hint):
    def refuse(*args, dir=None, prefix="", suffix=""):  # noqa: A002 (mkstemp's name)
        raise OSError(code, os.strerror(code), f"{dir}/{prefix}abc{suffix}")

    monkeypatch.setattr("speed.utils.atomic.tempfile.mkstemp", refuse)
    target = tmp_path / "0000001.pt"
    with pytest.raises(OSError) as caught:
        atomic_write(target, b"weights")
    assert (caught.value.errno, caught.value.filename) == (code, str(target))
    message = user_message(caught.value)
    assert message == f"{os.strerror(code)}: {target} ({message.split(' (')[-1]}"
    assert hint in message and "\n" not in message


def test_a_read_only_run_folder_is_one_line(
    main, demo_config, tiny_overrides, tmp_path, capsys, monkeypatch
):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("speed.utils.atomic.tempfile.mkstemp", read_only)
    words = ["-c", demo_config, "-p", "train", *tiny_overrides(tmp_path / "run")]
    line = one_line(main, capsys, words)
    assert line.startswith(f"error: Read-only file system: {tmp_path}/run/")
    assert line.endswith("(that file system is read-only: choose another path)")


def test_files_that_are_not_checkpoints_are_one_line(
    main, run, demo_config, tiny_overrides, tmp_path, capsys
):
    from PIL import Image

    png, text, npz = tmp_path / "grid.png", tmp_path / "config.yaml", tmp_path / "samples.npz"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    text.write_text("seed: &a [*a]\n")
    np.savez(npz, arr_0=np.zeros(3))
    expected = {
        png: f"error: {png} is not a torch checkpoint (it is a PNG image)",
        text: f"error: {text} is not a torch checkpoint (it is a text file)",
        npz: f"error: {npz} is not a torch checkpoint (it is a zip archive without torch's",
        tmp_path: f"error: ckpt_path {tmp_path} is a folder, not a checkpoint file",
    }
    for path, start in expected.items():
        for phase in ("inference", "train"):
            overrides = [*tiny_overrides(tmp_path / phase), f"ckpt_path={path}"]
            line = one_line(main, capsys, ["-c", demo_config, "-p", phase, *overrides])
            assert line.startswith(start) or (phase == "train" and str(path) in line), line
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(1)}, legacy, _use_new_zipfile_serialization=False)
    from speed.models import load_checkpoint

    assert torch.equal(load_checkpoint(legacy)["w"], torch.ones(1))  # the old format still loads
