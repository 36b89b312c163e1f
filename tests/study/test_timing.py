"""speed/study/timing.py (`python -m speed.study STUDY.yaml --time`): each method's seconds per
step on this machine, per interval of the speed-up curve and per stage of training; the training
entry point's `start_step`; and the report's wall-clock speed-ups from timing.json."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from speed.config import ConfigError, load_config
from speed.models.maskdit import MaskDiT
from speed.runners.train import train
from speed.study import plan, report, summary, timing
from speed.study.__main__ import main as study_main
from speed.utils.logging import read_metrics

REPO = Path(__file__).resolve().parents[2]

MASKDIT = REPO / "configs/image/animals/maskdit.yaml"
TINY_MASKDIT = {
    "model.hidden_size": 32,
    "model.depth": 2,
    "model.num_heads": 2,
    "model.decoder_hidden_size": 16,
    "model.decoder_depth": 1,
    "model.decoder_num_heads": 2,
    "data.batch_size": 4,
    "warmup_steps": 0,
    "tensorboard": False,
}


# ---- intervals and stages (pure) ----


def test_intervals_take_the_cost_of_the_stage_they_lie_in():
    """The masked DiT study: curve every 750 of 6000 steps, MaskDiT unmasked from 5500. The last
    curve interval is split at 5500: 5250-5500 masked, 5500-6000 unmasked."""
    starts = list(range(0, 6000, 750))
    stages = timing.interval_stages(starts, [0, 5500])
    assert list(stages) == [0, 750, 1500, 2250, 3000, 3750, 4500, 5250, 5500]
    assert all(stages[s] == 0 for s in starts) and stages[5500] == 5500
    assert timing.interval_stages(starts, [0]) == {s: 0 for s in starts}  # one stage: no split
    assert timing.interval_stages([0, 2], [0, 2]) == {0: 0, 2: 2}  # a boundary on an interval


def test_stage_starts_read_the_stage_keys_inside_the_budget():
    cfg = OmegaConf.create({"model": {"unmask_at_step": 5500}})
    assert timing.stage_starts(cfg, 6000) == [0, 5500]
    assert timing.stage_starts(cfg, 5500) == [0]  # at the last step or later: never reached
    assert timing.stage_starts(OmegaConf.create({"model": {"unmask_at_step": None}}), 10) == [0]
    assert timing.stage_starts(OmegaConf.create({"model": {"name": "DiT"}}), 10) == [0]
    assert timing.STAGE_KEYS == ("model.unmask_at_step",)


def test_seconds_to_a_step_sum_the_intervals():
    costs = {0: 0.5, 750: 0.5, 5500: 2.0}
    assert timing.seconds_to(costs, 0) == 0.0
    assert timing.seconds_to(costs, 1000) == pytest.approx(500.0)
    assert timing.seconds_to(costs, 6000) == pytest.approx(5500 * 0.5 + 500 * 2.0)


def test_round_seconds_drop_the_warmup_and_take_the_median_round():
    per_step = [9.0, 9.0, 1.0, 3.0, 10.0, 10.0, 2.0, 2.0]  # warm-up 2, rounds of 2: 2, 10, 2
    assert timing.round_seconds(per_step, warmup=2, steps=2, rounds=3) == 2.0
    with pytest.raises(RuntimeError, match="logged 8 steps"):
        timing.round_seconds(per_step, warmup=2, steps=2, rounds=4)


# ---- train(start_step=s) ----


def _words(folder, steps, **extra):
    values = {
        **TINY_MASKDIT, "lr_schedule": "linear_anneal", "log_every": 1, "ckpt_every": 100,
        "sample_every": 0, "wandb": "disabled", "max_training_steps": steps, **extra,
    }  # fmt: skip
    return [f"{k}={v}" for k, v in values.items()] + [f"experiment_dir={folder}"]


def test_train_from_a_start_step(tmp_path, single_thread, monkeypatch):
    """Steps 8 and 9 of 10 with a linear anneal: the logs, the lr and the checkpoint say so, and
    MaskDiT's unmasked stage (from step 9) is in force from there."""
    seen = []
    inputs = MaskDiT.training_inputs

    def record(self, step, *args):
        seen.append((step, self.mask_ratio_at(step)))
        return inputs(self, step, *args)

    monkeypatch.setattr(MaskDiT, "training_inputs", record)
    cfg = load_config(str(MASKDIT), "train", _words(tmp_path / "run", 10, **{
        "model.unmask_at_step": 9}))  # fmt: skip
    last = train(cfg, start_step=8)
    assert last.name == "0000010.pt"
    rows = read_metrics(tmp_path / "run/train/logs")
    assert [r["step"] for r in rows] == [9, 10]
    lr = cfg.optimizer.lr
    assert rows[0]["lr"] == pytest.approx(lr * (1 - 9 / 10))  # after step 8: the factor of 9
    assert rows[1]["lr"] == pytest.approx(0.0)
    from speed.models import load_checkpoint

    state = load_checkpoint(last)
    assert state["step"] == 10
    assert seen == [(8, 0.5), (9, 0.0)]  # masked at step 8, unmasked from unmask_at_step 9 on
    resumed = load_config(str(MASKDIT), "train", [*_words(tmp_path / "run", 12), "resume=true"])
    with pytest.raises(ConfigError, match="start_step=3 begins a fresh run"):
        train(resumed, start_step=3)
    with pytest.raises(ConfigError, match="must lie in"):
        train(load_config(str(MASKDIT), "train", _words(tmp_path / "other", 4)), start_step=4)


# ---- the timing pass ----


@pytest.fixture
def masked_study(tmp_path, tiny_study):
    """A tiny MaskDiT study file: 4 steps, curve every 2; `switch` unmasks at step 3, `never`
    after the budget."""
    return tiny_study(
        tmp_path,
        base=str(MASKDIT),
        methods={"switch": {"model.unmask_at_step": 3}, "never": {"model.unmask_at_step": 100}},
        reference="switch",
        seeds=[0],
        overrides={**TINY_MASKDIT, "log_every": 1, "per_proc_batch_size": 8},
    )


def test_time_writes_each_methods_cost_per_interval(masked_study, single_thread, capsys):
    argv = [str(masked_study), "--time", "--time-steps", "1", "--time-rounds", "2",
            "--time-warmup", "1", "--threads", "1"]  # fmt: skip
    assert study_main(argv) == 0
    study = plan.open_study(masked_study)[0]
    path = study.records_dir / "timing.json"
    written = json.loads(path.read_text())
    assert set(written) >= {"machine", "date", "command", "threads", "load_average", "methods"}
    assert written["machine"] == plan.machine() and written["threads"] == 1
    assert written["command"] == "python -m speed.study " + " ".join(argv)
    assert len(written["load_average"]) == 3 and written["date"].endswith(" UTC")
    switch, never = written["methods"]["switch"], written["methods"]["never"]
    # curve intervals start at 0 and 2; `switch` has a stage from 3: its own interval
    assert set(switch["sec_per_step"]) == {"0", "2", "3"} and set(never["sec_per_step"]) == {
        "0", "2"}  # fmt: skip
    assert set(switch["stages"]) == {"0", "3"} and set(never["stages"]) == {"0"}
    assert switch["sec_per_step"]["0"] == switch["sec_per_step"]["2"] == switch["stages"]["0"]
    assert switch["sec_per_step"]["3"] == switch["stages"]["3"]
    costs = [v for m in (switch, never) for v in m["sec_per_step"].values()]
    assert all(0 < v < 60 for v in costs)
    assert switch["seed"] == 0 and switch["run"] == "method=switch,seed=0"
    out = capsys.readouterr().out
    assert "switch from step 3:" in out and "s/step" in out and f"wrote {path}" in out
    # nothing of the bursts is left in the study's folders, and the records still read
    assert not (study.runs_dir / "sweep").exists() or not any((study.runs_dir / "sweep").iterdir())
    assert plan.load_records(study.records_dir) == {}
    assert timing.load_timing(study)["methods"]["switch"]["sec_per_step"][3] > 0


# ---- the report from timing.json ----

LRS = (0.002, 0.001)


def _unet_records(tmp_path, small_speed_study, make_record):
    """Baseline FID 30/20/10 at steps 100/200/300 (target 10 at 300); the paper's SpeeD 20/10/5
    (10 at step 200: 1.5x in steps); the released variant 40/30/20; both learning rates, seed 0;
    the records say 0.5 s/step for every run, on two machines."""
    study = small_speed_study(tmp_path)
    runs = plan.study_runs(study, plan.study_sweep(study))
    curves = {"baseline": (30, 20, 10), "speed_paper": (20, 10, 5), "speed_released": (40, 30, 20)}
    records = {}
    for method, curve in curves.items():
        for v in LRS:
            record = make_record(runs[(method, (("optimizer.lr", v),), 0)], curve[-1], curve)
            record["machine"] = "box A" if method == "baseline" else "box B"
            records[record["name"]] = record
    return study, runs, records


def _timing(methods):
    return {"machine": "cpu (Test CPU, 2 cores, avx2)", "date": "2026-12-06 18:00 UTC",
            "command": "python -m speed.study studies/speed_unet.yaml --time", "threads": 1,
            "load_average": [0.1, 0.1, 0.1], "methods": {
                m: {"sec_per_step": costs} for m, costs in methods.items()}}  # fmt: skip


def test_report_uses_the_timing_seconds(tmp_path, small_speed_study, make_record):
    """Timing: the baseline 1 s/step throughout (300 s to its final score); the paper's SpeeD
    1 s/step to step 100, then 3 s/step: step 200 at 100 + 300 = 400 s, a wall-clock speed-up of
    300 / 400 = 0.75x where the records' equal seconds per step would give the step speed-up."""
    study, runs, records = _unet_records(tmp_path, small_speed_study, make_record)
    before = summary.summarize(study, runs, records)
    assert before["speedup"]["speed_paper"]["seconds"]["per_seed"] == {0: pytest.approx(1.5)}
    assert any("2 different machines" in w for w in before["warnings"])
    timed = _timing({
        "baseline": {0: 1.0}, "speed_paper": {0: 1.0, 100: 3.0}, "speed_released": {0: 0.1},
    })  # fmt: skip
    result = summary.summarize(study, runs, records, timed)
    paper = result["speedup"]["speed_paper"]
    assert paper["per_seed"] == {0: pytest.approx(1.5)}  # steps: unchanged
    assert paper["seconds"]["per_seed"] == {0: pytest.approx(0.75)}
    assert result["speedup"]["speed_released"]["seconds"]["per_seed"] == {0: None}  # never
    assert not any("machines" in w for w in result["warnings"])
    table = report.markdown(study, result, records, "cmd", timed)
    assert (
        "Wall-clock speed-ups use the timing measured on cpu (Test CPU, 2 cores, avx2) on "
        "2026-12-06 18:00 UTC by `python -m speed.study studies/speed_unet.yaml --time`"
    ) in table
    assert "speed_paper 1.000 to 3.000" in table
    assert "| seed 0: 0.75x | 0.75 (1/1 reach) |" in table
    # the methods' s/step are the timing's over the 300-step budget: (100 x 1 + 200 x 3) / 300
    assert result["methods"]["speed_paper"]["sec_per_step"] == pytest.approx(7 / 3)
    lines = table.splitlines()
    rows = {line.split(" | ")[0]: line for line in lines if "| optimizer.lr 0.002 |" in line}
    assert "s/step (timed) |" in table and rows["| speed_paper"].endswith("| 2.333 |")
    assert rows["| baseline"].endswith("| 1.000 |")
    plain = report.markdown(study, before, records, "cmd")
    assert "s/step (runs) |" in plain and "| 0.500 |" in plain
    assert "Wall-clock speed-ups use" not in plain and "| seed 0: 1.50x | 1.50 (1/1 reach) |" in (
        plain)  # fmt: skip


def test_a_method_missing_from_the_timing_shows_no_wall_clock_speedup(
    tmp_path, small_speed_study, make_record
):
    study, runs, records = _unet_records(tmp_path, small_speed_study, make_record)
    timed = _timing({"baseline": {0: 1.0}, "speed_paper": {0: 0.5}})
    result = summary.summarize(study, runs, records, timed)
    assert result["speedup"]["speed_paper"]["seconds"]["per_seed"] == {0: pytest.approx(3.0)}
    assert result["speedup"]["speed_released"]["seconds"] is None
    missing = [w for w in result["warnings"] if "not in timing.json" in w]
    assert missing == [
        f"speed_released: not in timing.json, so no wall-clock speed-up is shown; rerun "
        f"python -m speed.study {study.path} --time"
    ]
    table = report.markdown(study, result, records, "cmd", timed)
    row = next(line for line in table.splitlines() if line.startswith("| speed_released | seed"))
    assert row.endswith("| - | - |")
    # the reference missing: no method has a wall-clock speed-up
    result = summary.summarize(study, runs, records, _timing({"speed_paper": {0: 0.5}}))
    assert all(s["seconds"] is None for s in result["speedup"].values())


def test_write_report_reads_timing_json_beside_the_records(
    tmp_path, small_speed_study, make_record
):
    study, runs, records = _unet_records(tmp_path, small_speed_study, make_record)
    study.records_dir.mkdir(parents=True)
    for record in records.values():
        plan.write_record(study.records_dir, record)
    import dataclasses

    study = dataclasses.replace(study, report=tmp_path / "report" / "unet")
    report.write_report(study, runs, plan.load_records(study.records_dir), "cmd")
    assert "Wall-clock speed-ups use" not in (tmp_path / "report/unet.md").read_text()
    assert "timing" not in json.loads((tmp_path / "report/unet.json").read_text())
    timed = _timing({"baseline": {0: 1.0}, "speed_paper": {0: 1.0, 100: 3.0}})
    (study.records_dir / "timing.json").write_text(json.dumps(timed))
    assert plan.load_records(study.records_dir).keys() == records.keys()
    report.write_report(study, runs, plan.load_records(study.records_dir), "cmd")
    text = (tmp_path / "report/unet.md").read_text()
    assert "Wall-clock speed-ups use the timing measured on cpu (Test CPU" in text
    assert "| seed 0: 0.75x | 0.75 (1/1 reach) |" in text
    data = json.loads((tmp_path / "report/unet.json").read_text())
    assert data["timing"]["methods"]["speed_paper"]["sec_per_step"] == {"0": 1.0, "100": 3.0}
