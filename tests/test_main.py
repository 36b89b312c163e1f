"""main.py: a user error is one line and exit code 2; any other exception keeps its traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from speed.errors import ConfigError, MissingFileError, UserError

REPO = Path(__file__).resolve().parents[1]


def test_error_kinds():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(MissingFileError, UserError)
    assert issubclass(MissingFileError, FileNotFoundError)
    assert not issubclass(ValueError, UserError)


def test_missing_config_file_is_one_line(main, tmp_path, capsys):
    assert main(["-c", str(tmp_path / "nope.yaml"), "-p", "train"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: config file not found: {tmp_path / 'nope.yaml'}\n"


def test_misspelled_key_is_one_line(main, demo_config, tmp_path, capsys):
    assert main(["-c", demo_config, "-p", "config", "ckpt_evry=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ckpt_every" in err


def test_bad_constructor_value_is_a_config_error(main, dit_config, tiny_dit, tmp_path, capsys):
    """A value the model refuses when it is built (DiT: hidden_size % num_heads) is the user's."""
    words = [*tiny_dit, "model.num_heads=3", f"experiment_dir={tmp_path}", "wandb=disabled"]
    assert main(["-c", dit_config, "-p", "train", *words]) == 2
    err = capsys.readouterr().err
    assert err == "error: model: hidden_size 32 is not divisible by num_heads 3\n"


def test_sampling_without_a_checkpoint_is_one_line(main, demo_config, tmp_path, capsys):
    assert main(["-c", demo_config, "-p", "sample", f"experiment_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no checkpoint in {tmp_path / 'train/checkpoints'}; ")
    assert err.count("\n") == 1


def test_speed_debug_raises_the_user_error(main, tmp_path, monkeypatch):
    monkeypatch.setenv("SPEED_DEBUG", "1")
    with pytest.raises(MissingFileError, match="config file not found"):
        main(["-c", str(tmp_path / "nope.yaml"), "-p", "train"])


@pytest.mark.parametrize("kind", [ValueError, RuntimeError, FileNotFoundError, KeyError])
def test_internal_errors_propagate(main, demo_config, tmp_path, monkeypatch, capsys, kind):
    """A bug in library code (here the train phase raising) is not reported as a user error."""

    def broken_train(cfg):
        raise kind("an internal bug")

    monkeypatch.setattr("speed.runners.train.train", broken_train)
    with pytest.raises(kind, match="an internal bug"):
        main(["-c", demo_config, "-p", "train", f"experiment_dir={tmp_path}"])
    assert capsys.readouterr().err == ""


def test_a_finished_phase_leaves_its_process_group(main, demo_config, tmp_path, monkeypatch):
    """main() destroys the process group a phase joined: one left alive at exit can abort the
    process at interpreter shutdown (gloo, pytorch/pytorch#190489) after the work is done."""
    import torch.distributed as dist

    def train_in_a_group(cfg):
        store = dist.FileStore(str(tmp_path / "store"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)

    monkeypatch.setattr("speed.runners.train.train", train_in_a_group)
    assert main(["-c", demo_config, "-p", "train", f"experiment_dir={tmp_path}"]) == 0
    assert not dist.is_initialized()


BROKEN_RUN = """
import runpy, sys
import speed.runners.train as train_module

def broken_train(cfg):
    raise ValueError("an internal bug")

train_module.train = broken_train
sys.argv = ["main.py", *sys.argv[1:]]
runpy.run_path("main.py", run_name="__main__")
"""


def _run(args, **env):
    env = {k: v for k, v in os.environ.items() if k != "SPEED_DEBUG"} | env
    return subprocess.run(
        [sys.executable, "-c", BROKEN_RUN, *args], cwd=REPO, capture_output=True, text=True, env=env
    )


def test_command_line_keeps_the_traceback_of_a_bug(demo_config, tmp_path):
    proc = _run(["-c", demo_config, "-p", "train", f"experiment_dir={tmp_path}"])
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: an internal bug")
    assert "broken_train" in proc.stderr


def test_command_line_user_error_is_one_line_unless_debugging(tmp_path):
    args = ["-c", str(tmp_path / "nope.yaml"), "-p", "train"]
    proc = _run(args)
    assert (proc.returncode, proc.stderr.count("\n")) == (2, 1)
    assert proc.stderr.startswith("error: config file not found")
    debug = _run(args, SPEED_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "MissingFileError: config file not found" in debug.stderr
