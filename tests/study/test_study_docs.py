"""docs/study.md: its example study file is a valid study, its commands name the study's real
modules and files."""

import re
from pathlib import Path

from speed.study.plan import study_runs, study_sweep
from speed.study.spec import load_study

REPO = Path(__file__).resolve().parents[2]
PAGE = (REPO / "docs" / "study.md").read_text()


def test_the_example_study_file_is_a_study(tmp_path, in_repo):
    (example,) = re.findall(r"```yaml\n(.*?)```", PAGE, re.S)
    path = tmp_path / "lr_demo.yaml"
    path.write_text(example)
    study = load_study(path)
    assert list(study.methods) == ["lr1e-3", "lr2e-3"] and study.reference == "lr1e-3"
    assert study.score.final == {"domain": ("fid", "class_accuracy", "kid"), "inception": ("fid",)}
    runs = study_runs(study, study_sweep(study))
    assert sorted(r.name for r in runs.values()) == [
        f"method={m},seed={s}" for m in ("lr1e-3", "lr2e-3") for s in (0, 1)
    ]


def test_the_commands_name_real_modules_and_files():
    for module in set(re.findall(r"python -m (speed\.study[.\w]*)", PAGE)):
        path = REPO / module.replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module
    for study in set(re.findall(r"studies/speed_\w+\.yaml", PAGE)):
        assert (REPO / study).is_file(), study
