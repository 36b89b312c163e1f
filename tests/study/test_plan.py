"""speed/study/plan.py: the SpeeD study's runs, its stages and learning-rate choice on records with
known scores, and the common setting; a study without a grid knows every run at once."""

import dataclasses

import pytest

from speed.study import plan

NAMED = ("baseline", "speed_paper", "speed_released")
LRS = (0.002, 0.001)


def lr(value):
    return (("optimizer.lr", value),)


@pytest.fixture
def unet(tmp_path, small_speed_study):
    study = small_speed_study(tmp_path)
    return study, plan.study_runs(study, plan.study_sweep(study))


def test_the_study_is_every_method_at_every_rate_and_its_seeds(unet):
    study, runs = unet
    assert len(runs) == sum(len(m.seeds) * len(LRS) for m in study.methods.values()) == 38
    named = runs[("speed_paper", lr(0.002), 0)]
    expected = "diffusion.sampling=speed,diffusion.weighting=speed,optimizer.lr=0.002,seed=0"
    assert named.name == expected
    assert "diffusion.sampling=tanh" in runs[("speed_released", lr(0.002), 0)].name
    assert "optimizer.lr=0.002" in named.sweep_run.overrides
    assert "max_training_steps=300" in named.sweep_run.overrides


def test_stages_choose_each_methods_rate_then_the_common_rate_for_the_others(unet, make_record):
    study, runs = unet
    todo, waiting = plan.pending(study, runs, {})
    assert [(r.method, r.setting, r.seed) for r in todo] == [
        (m, lr(v), 0) for v in LRS for m in NAMED
    ] and waiting
    # Seed 0 finished: baseline and the paper's SpeeD are better at 1e-3, the released at 2e-3.
    finals = {("baseline", 1e-3): 10.0, ("speed_paper", 1e-3): 12.0, ("speed_released", 2e-3): 9.0}
    records = {r.name: make_record(r, finals.get((r.method, r.setting[0][1]), 50.0)) for r in todo}
    todo, waiting = plan.pending(study, runs, records)
    assert not waiting and len(todo) == 6 + 6 + 4
    expected = {"baseline": 1e-3, "speed_paper": 1e-3, "speed_released": 2e-3}
    assert [(r.method, r.setting, r.seed) for r in todo[:6]] == [
        (m, lr(expected[m]), s) for s in (1, 2) for m in NAMED
    ]
    others = todo[6:12]  # every other cell, seed 0, at the common rate
    assert {r.setting for r in others} == {lr(1e-3)} and {r.seed for r in others} == {0}
    assert {r.method for r in others}.isdisjoint(NAMED)
    # Last, seeds 1 and 2 of the paper's two parts alone, at the common rate.
    parts = {"speed_weighting_only", "speed_sampling_only"}
    assert [(r.method in parts, r.setting, r.seed) for r in todo[12:]] == [
        (True, lr(1e-3), s) for s in (1, 1, 2, 2)
    ]
    records.update({r.name: make_record(r, 20.0) for r in todo})
    assert plan.pending(study, runs, records) == ([], False)


def test_common_setting_is_the_majority_and_the_smaller_on_a_tie(tmp_path, small_speed_study):
    study = small_speed_study(tmp_path, fairness={"grid": {"optimizer.lr": [2e-3, 1e-3, 5e-4]}})
    assert plan.common_setting(study, {"a": lr(2e-3), "b": lr(2e-3), "c": lr(1e-3)}) == lr(2e-3)
    assert plan.common_setting(study, {"a": lr(2e-3), "b": lr(5e-4), "c": lr(1e-3)}) == lr(5e-4)
    assert plan.common_setting(study, {"a": lr(2e-3), "b": None, "c": lr(1e-3)}) is None


def test_a_higher_is_better_score_chooses_the_highest(tmp_path, small_speed_study, make_record):
    study = small_speed_study(tmp_path)
    runs = plan.study_runs(study, plan.study_sweep(study))
    cells = {("baseline", lr(v), 0): make_record(runs[("baseline", lr(v), 0)], 10.0, accuracy=a)
             for v, a in ((0.002, 0.9), (0.001, 0.5))}  # fmt: skip
    assert plan.choose_setting(study, cells, "baseline") == lr(0.002)  # equal FIDs: the first
    score = {**_score(study), "choose_by": "domain.class_accuracy"}
    study = small_speed_study(tmp_path, score=score)
    assert plan.choose_setting(study, cells, "baseline") == lr(0.002)
    cells[("baseline", lr(0.001), 0)]["final"]["domain"]["class_accuracy"] = 0.95
    assert plan.choose_setting(study, cells, "baseline") == lr(0.001)


def _score(study):
    import yaml

    raw = yaml.safe_load(study.path.read_text())["score"]
    raw["curves"]["curve"]["every"] = 100
    raw["curves"]["curve_guidance1"]["every"] = 300
    return raw


def test_the_dit_study_ends_with_every_method_at_the_common_rate(
    tmp_path, small_speed_study, make_record
):
    """The baseline chose 2e-3, the others 1e-3: its seeds 1 and 2 also run at 1e-3, after the
    chosen rates' seeds; the other methods have theirs already; no other cells."""
    study = small_speed_study(tmp_path, name="speed_dit")
    runs = plan.study_runs(study, plan.study_sweep(study))
    first, waiting = plan.pending(study, runs, {})
    assert len(first) == 6 and waiting
    finals = {("baseline", 2e-3): 10.0, ("speed_paper", 1e-3): 12.0, ("speed_released", 1e-3): 9.0}
    records = {r.name: make_record(r, finals.get((r.method, r.setting[0][1]), 50.0)) for r in first}
    partial = dict(list(records.items())[:5])  # the released variant's rate is not chosen yet
    todo, waiting = plan.pending(study, runs, partial)
    assert waiting and [(r.method, r.setting[0][1], r.seed) for r in todo] == [
        ("speed_released", 1e-3, 0),
        ("baseline", 2e-3, 1),
        ("speed_paper", 1e-3, 1),
        ("baseline", 2e-3, 2),
        ("speed_paper", 1e-3, 2),
    ]
    todo, waiting = plan.pending(study, runs, records)
    assert not waiting
    assert [(r.method, r.setting[0][1], r.seed) for r in todo] == [
        ("baseline", 2e-3, 1),
        ("speed_paper", 1e-3, 1),
        ("speed_released", 1e-3, 1),
        ("baseline", 2e-3, 2),
        ("speed_paper", 1e-3, 2),
        ("speed_released", 1e-3, 2),
        ("baseline", 1e-3, 1),
        ("baseline", 1e-3, 2),
    ]
    records.update({r.name: make_record(r, 10.0) for r in todo})
    assert plan.pending(study, runs, records) == ([], False)


def test_without_a_grid_every_run_is_known_at_once(tmp_path, tiny_study):
    from speed.study.spec import load_study

    study = load_study(tiny_study(tmp_path))
    runs = plan.study_runs(study, plan.study_sweep(study))
    todo, waiting = plan.pending(study, runs, {})
    assert not waiting
    assert [r.name for r in todo] == ["method=lr1e-3,seed=0", "method=lr2e-3,seed=0",
                                      "method=lr1e-3,seed=1", "method=lr2e-3,seed=1"]  # fmt: skip
    assert plan.setting_text(()) == "shared settings"
    assert plan.setting_text(lr(0.001)) == "optimizer.lr 0.001"


def test_a_record_short_of_a_raised_steps_budget_is_pending_again(unet, make_record):
    """Only a run this study trained, under a steps budget alone, to fewer steps than it asks."""
    study, runs = unet  # 300 steps
    run = runs[("baseline", lr(0.002), 0)]
    record = make_record(run, 10.0)
    assert not plan.short_of_budget(study, record)  # 300 of 300
    assert run not in plan.pending(study, runs, {run.name: record})[0]
    record["steps"] = 200
    assert plan.short_of_budget(study, record)
    assert run in plan.pending(study, runs, {run.name: record})[0]
    assert not plan.short_of_budget(study, {**record, "copied_from": "other.json"})
    timed = dataclasses.replace(study, seconds=60.0)  # runs stop where time runs out
    assert not plan.short_of_budget(timed, record)
