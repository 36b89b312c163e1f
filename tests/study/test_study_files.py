"""Every committed study file parses, and each of its runs' configs loads and builds its
objective (a mistake in a study that runs for hours shows here, not hours in)."""

from pathlib import Path

import pytest

from speed.config import instantiate
from speed.study.plan import open_study
from speed.study.summary import loss_weighting
from speed.sweep.expand import load_run_configs

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_a_committed_study_loads_every_run(path, in_repo):
    study, sweep, runs, _ = open_study(path)
    configs = load_run_configs(sweep)
    assert len(configs) == len(sweep.runs) == len(runs)
    for run, cfg in zip(sweep.runs, configs):
        assert cfg.max_training_steps == study.steps, run.name
        instantiate(cfg.diffusion)  # the objective and its timestep modes build


def test_the_flow_study_compares_what_its_header_says(in_repo):
    study, sweep, _, _ = open_study(REPO / "studies/flow_dit.yaml")
    built = {
        run.params["method"]: instantiate(cfg.diffusion)
        for run, cfg in zip(sweep.runs, load_run_configs(sweep))
        if run.params["seed"] == 0 and study.methods[run.params["method"]].same_as is None
    }
    masked = "studies/masked_dit.yaml"
    copies = {m.name: (str(m.same_as.study), m.same_as.method) for m in study.methods.values()
              if m.same_as}  # fmt: skip
    assert copies == {"ddpm": (masked, "baseline"), "maskdit_speed": (masked, "maskdit_speed")}
    kinds = {m: type(built[m].timestep_sampler.distribution).__name__ for m in built}
    assert kinds == {
        "sit": "UniformTime",
        "sit_logit_normal": "LogitNormalTime",
        "sit_speed": "SpeedTime",
        "sit_repa": "UniformTime",
        "sit_logit_normal_maskdit": "LogitNormalTime",
    }
    masked = [cfg.model for run, cfg in zip(sweep.runs, load_run_configs(sweep))
              if run.params["method"] == "sit_logit_normal_maskdit"]  # fmt: skip
    assert {(m.name, m.mask_ratio, m.unmask_at_step) for m in masked} == {
        ("MaskDiT-S/4", 0.5, 5500)
    }
    assert dict(study.methods["sit"].sampler) == {"sampler": "heun", "num_steps": 13}


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_a_committed_study_names_each_method_loss_weighting(path, in_repo):
    """The report's weighting line reads discrete and continuous-time samplers alike (a flow
    sampler has no per-step weight table)."""
    study, sweep, _, _ = open_study(path)
    described = {
        run.params["method"]: loss_weighting(cfg)
        for run, cfg in zip(sweep.runs, load_run_configs(sweep))
    }
    for method, cfg in zip([r.params["method"] for r in sweep.runs], load_run_configs(sweep)):
        weighting = cfg.diffusion.get("weighting")
        assert (described[method] is None) == (weighting in (None, "none")), method
    if path.stem == "flow_dit":
        assert described["sit_speed"].startswith("speed (lam=")
        assert described["sit"] is None
