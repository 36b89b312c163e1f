"""A method taken from another study (`same_as`): its mistakes are one line, the two studies' runs
are proven the same (training config and score block) when the study is opened, the worker copies
the other study's records instead of training and waits (then stops) while they are missing, and
the report says where the copied rows come from."""

import json
from pathlib import Path

import pytest
import yaml

from speed.errors import ConfigError
from speed.study import __main__ as cli
from speed.study import work
from speed.study.plan import copy_sources, open_study

REGIONS = {"loss_t/000-099": 0.1, "loss_t/900-999": 0.01}


def write(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture
def pair(tmp_path, tiny_study_raw):
    """fn(**changes) -> this study's file: one method `copy`, the runs of `other.yaml`'s lr1e-3
    (the tiny study with a region probe this study does not ask for)."""
    other = tiny_study_raw(tmp_path / "other")
    other["score"]["region_images"] = 4  # a probe: may differ, its field is not copied
    other_path = write(tmp_path / "other.yaml", other)

    def make(other_changes=None, **changes) -> Path:
        if other_changes:
            write(other_path, {**other, **other_changes})
        study = {
            **tiny_study_raw(tmp_path / "this"),
            "name": "this",
            "methods": {"copy": {"same_as": {"study": str(other_path), "method": "lr1e-3"}}},
            "reference": "copy",
            **changes,
        }
        return write(tmp_path / "this.yaml", study)

    return make


def source_record(name: str, seed: int) -> dict:
    """A record of the other study's lr1e-3 run of `seed` (4 steps, curve every 2)."""
    scores = {"fid": 30.0 - seed, "class_accuracy": 0.25}
    return {
        "name": name,
        "method": "lr1e-3",
        "setting": {},
        "seed": seed,
        "steps": 4,
        "sec_per_step": 0.5,
        "seconds": {"2": 1.0, "4": 2.0},
        "final_loss": 0.1,
        "curve": {"2": {"fid": 40.0, "class_accuracy": 0.2}, "4": scores},
        "final": {"domain": {**scores, "kid": 0.01}},
        "region_losses": REGIONS,
        "machine": "test",
        "date": "2026-12-01",
    }


def copy_of(tmp_path, method: str = "lr1e-3", **changes) -> dict:
    return {"same_as": {"study": str(tmp_path / "other.yaml"), "method": method}, **changes}


@pytest.mark.parametrize(
    "method, changes, message",
    [
        (
            {"same_as": {"study": "nowhere.yaml", "method": "lr1e-3"}},
            {},
            "methods.copy.same_as.study: no study file nowhere.yaml",
        ),
        (None, {"method": "lr9"}, "methods.copy.same_as.method: 'lr9' is not a method of"),
        (None, {"overrides": {"optimizer.lr": 0.001}}, "methods.copy: a same_as method takes its"),
        (None, {"config": "configs/image/animals/base.yaml"}, "remove config (or drop same_as"),
        (None, {"seeds": [2]}, "methods.copy.seeds: [2] must be among seeds [0, 1]"),
        (
            {"same_as": {"study": "x.yaml"}},
            {},
            "methods.copy.same_as: 'method' is required",
        ),
    ],
)
def test_a_same_as_mistake_is_one_line(tmp_path, pair, method, changes, message):
    if method is None:
        method = copy_of(tmp_path, changes.pop("method", "lr1e-3"), **changes)
    with pytest.raises(ConfigError) as error:
        open_study(pair(methods={"copy": method}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_seed_the_other_study_does_not_run_is_one_line(tmp_path, pair):
    path = pair(other_changes={"seeds": [0]})
    with pytest.raises(ConfigError) as error:
        open_study(path)
    assert str(error.value) == (
        f"methods.copy: seed 1 is not run by {tmp_path / 'other.yaml'}'s lr1e-3 (its seeds [0]); "
        "list this method's seeds among them"
    )
    study, *_ = open_study(pair(methods={"copy": copy_of(tmp_path, seeds=[0])}, seeds=[0, 1]))
    assert study.methods["copy"].seeds == (0,)


def test_copies_of_copies_and_grids_are_refused(tmp_path, pair, tiny_study_raw):
    pair()  # writes other.yaml
    chain = write(tmp_path / "chain.yaml", {
        **tiny_study_raw(tmp_path / "chain"),
        "methods": {"copy": copy_of(tmp_path)}, "reference": "copy",
    })  # fmt: skip
    method = {"same_as": {"study": str(chain), "method": "copy"}}
    with pytest.raises(ConfigError, match="is itself a copy of .*other.yaml's lr1e-3; name that"):
        open_study(pair(methods={"copy": method}))
    grid = {"grid": {"optimizer.lr": [0.001, 0.002]}}
    with pytest.raises(ConfigError, match="methods.copy.same_as: a copied method needs fairness"):
        open_study(pair(fairness=grid))


def test_identical_runs_pass_and_a_method_keeps_the_sources_config(tmp_path, pair):
    study, sweep, runs, _ = open_study(pair())
    copy = study.methods["copy"]
    assert copy.overrides == ("optimizer.lr=0.001",) and copy.same_as.method == "lr1e-3"
    sources = copy_sources(study)
    assert sources == {
        ("copy", (), s): tmp_path / "other" / "records" / f"method=lr1e-3,seed={s}.json"
        for s in (0, 1)
    }


def test_a_copied_runs_files_are_the_other_studys(tmp_path, pair):
    """The probes (samples, regions, handoff) read a copied method's checkpoints and samples where
    the other study trained it; its record keeps this study's run name."""
    study, sweep, runs, _ = open_study(pair())
    run = runs[("copy", (), 1)]
    other_sweep = (tmp_path / "other" / "runs").resolve() / "sweep"  # its runs: folder
    assert run.run_dir(sweep) == other_sweep / "method=lr1e-3,seed=1"
    assert run.words(sweep, ["x=1"])[-2:] == ["x=1", f"experiment_dir={run.run_dir(sweep)}"]
    assert run.name == "method=copy,seed=1" and run.sweep_run.run_dir(sweep.sweep_dir) != (
        run.run_dir(sweep))  # fmt: skip


def test_a_differing_override_is_named(tmp_path, pair, tiny_study_raw):
    raw = tiny_study_raw(tmp_path)
    path = pair(overrides={**raw["overrides"], "data.batch_size": 8})
    with pytest.raises(ConfigError) as error:
        open_study(path)
    assert str(error.value) == (
        f"methods.copy.same_as: seed 0 would train with data.batch_size=8 here and 4 in "
        f"{tmp_path / 'other.yaml'}'s lr1e-3 (only experiment_dir may differ)"
    )
    with pytest.raises(ConfigError, match="seed 0 would train with max_training_steps=8 here"):
        open_study(pair(budget={"steps": 8}))


def test_a_differing_score_block_is_named(tmp_path, pair, tiny_study_raw):
    score = tiny_study_raw(tmp_path)["score"]
    curve = {**score["curves"]["curve"], "samples": 4}
    with pytest.raises(ConfigError) as error:
        open_study(pair(score={**score, "curves": {"curve": curve}}))
    assert str(error.value) == (
        f"methods.copy.same_as: score.curves.curve.samples is 4 here and 8 in "
        f"{tmp_path / 'other.yaml'}: its records were scored otherwise"
    )
    sampler = {**score["sampler"], "guidance_scale": 1.0}
    with pytest.raises(ConfigError, match=r"score.sampler.guidance_scale is 1.0 here and 2.0 in"):
        open_study(pair(score={**score, "sampler": sampler}))


def test_the_worker_copies_records_waits_for_the_rest_and_reports(
    tmp_path, pair, monkeypatch, capsys
):
    path = pair()
    monkeypatch.setattr(work, "train", lambda cfg: pytest.fail("a copied run was trained"))
    source = tmp_path / "other" / "records" / "method=lr1e-3,seed=0.json"
    source.parent.mkdir(parents=True)
    source.write_text(json.dumps(source_record(source.stem, 0)))
    before = source.read_text()

    assert cli.main([str(path), "--poll", "0"]) == 0
    out = capsys.readouterr().out
    waiting = f"waiting for {tmp_path / 'other.yaml'}'s lr1e-3 seed 1: run that study"
    assert out.count(waiting) == 1
    assert "1 run(s) wait for other studies' records (above)" in out

    (copied,) = sorted((tmp_path / "this" / "records").glob("*.json"))
    record = json.loads(copied.read_text())
    assert copied.name == "method=copy,seed=0.json"
    assert record["name"] == "method=copy,seed=0" and record["method"] == "copy"
    assert record["copied_from"] == str(source)  # outside the repository: absolute
    assert "region_losses" not in record  # a probe this study does not ask for
    expected = source_record(source.stem, 0)
    assert {k: record[k] for k in ("seed", "final", "curve", "seconds", "machine")} == {
        k: expected[k] for k in ("seed", "final", "curve", "seconds", "machine")
    }
    assert source.read_text() == before  # the other study's record is untouched
    assert not (tmp_path / "this" / "runs" / "sweep" / "method=copy,seed=0").exists()
    assert not list((tmp_path / "this").rglob("*.pt"))  # nothing trained

    text = (tmp_path / "this" / "report" / "tiny.md").read_text()
    line = f"copy: the runs of {tmp_path / 'other.yaml'}'s lr1e-3 (copied records"
    assert f"{line}; seed(s) 1 wait for that study)" in text

    other = tmp_path / "other" / "records" / "method=lr1e-3,seed=1.json"
    other.write_text(json.dumps(source_record(other.stem, 1)))
    assert cli.main([str(path), "--poll", "0"]) == 0  # the other study caught up: copied now
    assert "waiting for" not in capsys.readouterr().out
    assert len(list((tmp_path / "this" / "records").glob("*.json"))) == 2
    assert f"{line})" in (tmp_path / "this" / "report" / "tiny.md").read_text()


def test_copied_from_is_relative_to_the_repository():
    assert work.repo_path(work.REPO / "studies" / "x.json") == "studies/x.json"
