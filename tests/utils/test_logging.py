"""Training shows its progress: steps/s and ETA in a tqdm bar in a terminal, the ETA at the end of
each log line everywhere, and no bars (training's or its sample grids') in a log file."""

import re

import pytest

from speed.config import load_config
from speed.runners.train import train
from speed.utils import logging as run_logging
from speed.utils.logging import format_duration


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (42.4, "42s"), (185, "3m05s"), (3600, "1h00m"), (7621, "2h07m")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def _train(tmp_path, demo_config, tiny_overrides):
    overrides = [*tiny_overrides(tmp_path / "run", steps=4), "sample_every=2"]
    train(load_config(demo_config, "train", overrides))


def test_a_log_file_gets_lines_with_the_eta_and_no_bars(
    tmp_path, demo_config, tiny_overrides, capsys
):
    _train(tmp_path, demo_config, tiny_overrides)  # pytest's capture: stderr is not a terminal
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("[step ")]
    assert [line[:14] for line in lines] == [f"[step 000000{i}]" for i in (1, 2, 3, 4)]
    etas = [re.search(r" eta=(\S+)$", line).group(1) for line in lines]
    assert etas[-1] == "0s" and all(re.fullmatch(r"\d+s|\d+m\d\ds", e) for e in etas)
    assert "\r" not in err and "it/s" not in err and "step/s" not in err


def test_a_terminal_gets_a_bar_of_the_steps(
    tmp_path, demo_config, tiny_overrides, capsys, monkeypatch
):
    monkeypatch.setattr(run_logging, "interactive", lambda: True)
    _train(tmp_path, demo_config, tiny_overrides)
    out, err = capsys.readouterr()
    assert "train:" in err and "4/4" in err and "step/s" in err
    assert sum(line.startswith("[step ") for line in out.splitlines()) == 4  # above the bar
