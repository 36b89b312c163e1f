"""`max_training_seconds`: training stops at the first step after that much training time (summed
over resumes), saves a checkpoint there, logs it, and counts as done; raising it trains on."""

import json
import time
import types

import pytest

from speed.config import load_config
from speed.models import load_checkpoint
from speed.run import DONE, RESUME, phase_state
from speed.runners import train as train_module
from speed.runners.train import train


@pytest.fixture
def one_second_per_step(monkeypatch):
    """The training loop's clock advances 1 s per reading: with logs and checkpoints only at the
    end, each step adds exactly one second of training time."""
    clock = iter(range(1_000_000))
    fake = types.SimpleNamespace(perf_counter=lambda: float(next(clock)))
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(**{**vars(time), **vars(fake)}))


def _words(tiny_overrides, run, seconds):
    return [
        *tiny_overrides(run, steps=50),
        "ckpt_every=100",
        "log_every=100",
        "sample_every=0",
        f"max_training_seconds={seconds}",
    ]


def test_training_stops_where_its_time_runs_out_and_resumes_with_more(
    tmp_path, demo_config, tiny_overrides, one_second_per_step, capsys
):
    run = tmp_path / "run"
    cfg = load_config(demo_config, "train", _words(tiny_overrides, run, 3))
    final = train(cfg)
    assert final == run / "train/checkpoints/0000003.pt"
    assert sorted(p.name for p in final.parent.glob("*.pt")) == ["0000003.pt"]
    ckpt = load_checkpoint(final)
    assert ckpt["step"] == 3 and ckpt["train_seconds"] == 3.0
    record = json.loads((run / "train/time_budget.json").read_text())
    assert record == {"step": 3, "max_training_seconds": 3, "train_seconds": 3.0}
    logged = [json.loads(line) for line in (run / "train/logs/metrics.jsonl").open()]
    assert [row["step"] for row in logged if "loss" in row] == [3]  # the last step is logged
    assert phase_state("train", cfg) == DONE
    capsys.readouterr()

    again = load_config(demo_config, "train", [*_words(tiny_overrides, run, 3), "resume=true"])
    assert train(again) == final
    assert capsys.readouterr().out == (
        f"train: nothing to do: {final} has trained 3 s, max_training_seconds=3; raise it to "
        "train further\n"
    )

    more = load_config(demo_config, "train", [*_words(tiny_overrides, run, 5), "resume=true"])
    assert phase_state("train", more) == RESUME  # another budget: not done
    final = train(more)
    assert final.name == "0000005.pt" and load_checkpoint(final)["train_seconds"] == 5.0
    assert phase_state("train", more) == DONE


def test_a_fresh_run_over_a_time_budgeted_one_forgets_where_it_stopped(
    tmp_path, demo_config, tiny_overrides, one_second_per_step
):
    run = tmp_path / "run"
    train(load_config(demo_config, "train", _words(tiny_overrides, run, 2)))
    assert (run / "train/time_budget.json").is_file()
    words = [*tiny_overrides(run, steps=2), "overwrite=true", "max_training_seconds=100"]
    train(load_config(demo_config, "train", [*words, "ckpt_every=100", "log_every=100"]))
    assert not (run / "train/time_budget.json").exists()  # it ended on its steps, not its time
    stale = load_config(demo_config, "train", _words(tiny_overrides, run, 2))
    assert phase_state("train", stale) == RESUME  # the old run's stop no longer counts


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_bad_time_budget_is_one_line(demo_config, value):
    from speed.errors import ConfigError

    with pytest.raises(ConfigError, match="max_training_seconds"):
        load_config(demo_config, "train", [f"max_training_seconds={value}"])
