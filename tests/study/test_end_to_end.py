"""A new two-method study (the demo UNet at lr 1e-3 against 2e-3, two seeds, four steps) runs end
to end from one file: stopped in its second run, it resumes with the same command, redoes nothing,
and writes its report."""

import json

import pytest
import torch

from speed.runners.train import train as real_train
from speed.study import __main__ as cli
from speed.study import work
from speed.study.plan import load_records


@pytest.mark.slow
def test_a_tiny_study_stops_resumes_and_reports(tmp_path, tiny_study, monkeypatch, capsys):
    path = tiny_study(tmp_path)
    trained = []

    def stopped_in_the_second_run(cfg):
        trained.append(cfg.experiment_dir)
        if len(trained) == 2:  # as SIGTERM does: a checkpoint at step 2, then return
            from omegaconf import OmegaConf

            cfg = OmegaConf.merge(cfg, {"max_training_steps": 2})
        return real_train(cfg)

    monkeypatch.setattr(work, "train", stopped_in_the_second_run)
    assert cli.main([str(path), "--poll", "0"]) == 1
    assert "run the same command to resume" in capsys.readouterr().out
    records = load_records(tmp_path / "records")
    assert list(records) == ["method=lr1e-3,seed=0"]
    first = (tmp_path / "records" / "method=lr1e-3,seed=0.json").read_text()

    trained.clear()
    monkeypatch.setattr(work, "train", lambda c: trained.append(c.experiment_dir) or real_train(c))
    assert cli.main([str(path), "--poll", "0"]) == 0
    records = load_records(tmp_path / "records")
    assert sorted(records) == [f"method={m},seed={s}" for m in ("lr1e-3", "lr2e-3") for s in (0, 1)]
    assert (tmp_path / "records" / "method=lr1e-3,seed=0.json").read_text() == first  # not redone
    assert len(trained) == 3 and "method=lr1e-3,seed=0" not in " ".join(trained)
    resumed = records["method=lr2e-3,seed=0"]
    assert resumed["setting"] == {} and resumed["seed"] == 0 and resumed["method"] == "lr2e-3"
    assert set(resumed["curve"]) == {"2", "4"} and set(resumed["final"]["domain"]) >= {"fid", "kid"}
    assert set(resumed["seconds"]) == {"2", "4"}
    assert resumed["seconds"]["4"] > resumed["seconds"]["2"] > 0
    assert resumed["sec_per_step"] > 0

    report = json.loads((tmp_path / "report" / "tiny.json").read_text())
    speedup = report["summary"]["speedup"]["lr2e-3"]
    assert set(speedup["per_seed"]) == {"0", "1"} and "seconds" in speedup
    text = (tmp_path / "report" / "tiny.md").read_text()
    assert "| lr2e-3 |" in text and "python -m speed.study" in text
    assert "still holds" in text  # a 0.995 EMA after 4 steps is the initialisation
    assert "KID subsets of 8 images are the whole set" in text
    assert (tmp_path / "report" / "tiny.png").stat().st_size > 10_000

    trained.clear()  # a finished study: nothing to train, the report rebuilt
    assert cli.main([str(path), "--report"]) == 0 and trained == []


@pytest.mark.slow
def test_a_time_budget_stops_each_run_where_its_time_runs_out(tmp_path, tiny_study, monkeypatch):
    import time
    import types

    import yaml

    from speed.runners import train as train_module

    clock = iter(range(1_000_000))  # the training loop's clock: one second per step
    fake = {**vars(time), "perf_counter": lambda: float(next(clock))}
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(**fake))
    path = tiny_study(tmp_path, seeds=[0], budget={"steps": 4, "seconds": 3})
    raw = yaml.safe_load(path.read_text())
    raw["overrides"]["log_every"] = 100  # no clock readings but the steps' own
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert cli.main([str(path), "--poll", "0"]) == 0
    records = load_records(tmp_path / "records")
    assert sorted(records) == ["method=lr1e-3,seed=0", "method=lr2e-3,seed=0"]
    for record in records.values():
        assert record["steps"] == 3  # the fourth step was never taken
        assert set(record["curve"]) == {"2", "3"} and set(record["seconds"]) == {"2", "3"}
    checkpoints = tmp_path / "runs/sweep/method=lr1e-3,seed=0/train/checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.pt")) == ["0000002.pt", "0000003.pt"]
    text = (tmp_path / "report" / "tiny.md").read_text()
    assert "3 s of training (at most 4 steps" in text


@pytest.mark.slow
def test_a_raised_budget_trains_recorded_runs_on_to_the_run_of_that_length(
    tmp_path, tiny_study, monkeypatch
):  # fmt: skip
    """A study recorded at 2 steps and run again with budget.steps 4 trains its run on from step 2
    (the 2-step checkpoint and scores kept), and ends with the weights and record of the same
    study run for 4 steps from the start."""
    one_run = {"methods": {"lr1e-3": {"optimizer.lr": 0.001}}, "seeds": [0]}
    name = "method=lr1e-3,seed=0"
    for folder in ("extended", "fresh"):
        (tmp_path / folder).mkdir()
    short = tiny_study(tmp_path / "extended", budget={"steps": 2}, **one_run)
    assert cli.main([str(short), "--poll", "0"]) == 0
    records = tmp_path / "extended/records"
    assert load_records(records)[name]["steps"] == 2
    run_dir = tmp_path / "extended/runs/sweep" / name
    first_checkpoint = (run_dir / "train/checkpoints/0000002.pt").read_bytes()
    first_curve = load_records(records)[name]["curve"]

    raised = tiny_study(tmp_path / "extended", budget={"steps": 4}, **one_run)
    starts = []
    record_start = lambda c: starts.append(c.max_training_steps) or real_train(c)  # noqa: E731
    monkeypatch.setattr(work, "train", record_start)
    assert cli.main([str(raised), "--poll", "0"]) == 0
    extended = load_records(records)[name]
    assert starts == [4] and extended["steps"] == 4
    assert (run_dir / "train/checkpoints/0000002.pt").read_bytes() == first_checkpoint
    assert set(extended["curve"]) == {"2", "4"} and extended["curve"]["2"] == first_curve["2"]
    assert set(extended["seconds"]) == {"2", "4"}

    fresh = tiny_study(tmp_path / "fresh", budget={"steps": 4}, **one_run)
    assert cli.main([str(fresh), "--poll", "0"]) == 0
    at_four = [
        torch.load(folder / "runs/sweep" / name / "train/checkpoints/0000004.pt", weights_only=True)
        for folder in (tmp_path / "extended", tmp_path / "fresh")
    ]
    for key in ("model", "ema"):
        for a, b in zip(at_four[0][key].values(), at_four[1][key].values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert extended["curve"] == load_records(tmp_path / "fresh/records")[name]["curve"]


def test_a_raised_budget_refuses_runs_whose_lr_anneals_over_their_length(tmp_path, tiny_study):
    from omegaconf import OmegaConf

    from speed.errors import ConfigError
    from speed.study.plan import check_extension

    cfg = OmegaConf.create({"lr_schedule": "cosine", "lr_anneal_steps": 0, "max_training_steps": 8})
    with pytest.raises(ConfigError, match="recorded at 4 steps under lr_schedule=cosine"):
        check_extension("run", cfg, 4)
    for steady in ({"lr_schedule": "warmup"}, {"lr_anneal_steps": 8}):
        check_extension("run", OmegaConf.merge(cfg, steady), 4)
