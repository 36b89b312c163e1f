"""speed/study/spec.py: a study file's mistakes are one line naming the key (and the closest known
one), and a method is any config change: overrides of any key (a whole `model` node replaced),
an overlay file, or its own experiment file."""

import pytest
import yaml

from speed.errors import ConfigError, MissingFileError
from speed.study.plan import study_runs, study_sweep
from speed.study.spec import load_study, override_text
from speed.sweep.expand import load_run_configs

DIT = {
    "_target_": "speed.models.dit.build_dit",
    "name": "DiT-S/4",
    "hidden_size": 32,
    "depth": 2,
    "num_heads": 2,
}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method": {}}, "the study file: unknown key 'method'; did you mean 'methods'?"),
        ({"reference": "lr3e-3"}, "reference: 'lr3e-3' is not a method"),
        ({"methods": {}}, "methods: name at least one method"),
        ({"seeds": [0, 0]}, "seeds: [0, 0] repeats a value"),
        ({"budget": {"steps": 5}}, "budget.steps (5) and every curve's interval must be multiples"),
        ({"budget": {"step": 4}}, "budget: unknown key 'step'; did you mean 'steps'?"),
        ({"budget": {"seconds": 60}}, "budget.steps is required, with budget.seconds too"),
        (
            {"budget": {"steps": 4, "seconds": -1}},
            "budget.seconds: a positive number of seconds, got -1",
        ),
        ({"run_names": "name"}, "run_names: 'name'; choose one of ['method', 'overrides']"),
        ({"ladder": ["lr1e-3", "lr3e-3"]}, "ladder: ['lr3e-3'] not among the methods"),
        ({"ladder": ["lr1e-3"]}, "ladder: ['lr1e-3']: name two or more methods, each once"),
        ({"ladder": "lr1e-3"}, "ladder: a list of method names"),
        ({"fairness": {"grid": {"optimizer.lr": 0.1}}}, "fairness.grid.optimizer.lr: a list"),
        (
            {
                "fairness": {"grid": {"optimizer.lr": [1e-3, 2e-3]}},
                "methods": {"a": {"overrides": {}, "seeds": [1]}},
                "reference": "a",
            },
            "methods.a.seeds: a tuned method runs the first seed (0)",
        ),
    ],
)
def test_a_mistake_is_one_line_naming_the_key(tmp_path, tiny_study, changes, message):
    with pytest.raises(ConfigError) as error:
        load_study(tiny_study(tmp_path, **changes))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_score_mistakes_name_the_key_and_the_choices(tmp_path, tiny_study):
    score = yaml.safe_load(tiny_study(tmp_path).read_text())["score"]
    bad = {**score, "curves": {"curve": {**score["curves"]["curve"], "metrics": ["fdi"]}}}
    with pytest.raises(ConfigError, match="unknown value 'fdi'; did you mean 'fid'"):
        load_study(tiny_study(tmp_path, score=bad))
    bad = {**score, "speedup_metric": "curve.kid"}
    with pytest.raises(ConfigError, match="speedup_metric: curve.kid is no scored curve metric"):
        load_study(tiny_study(tmp_path, score=bad))
    with pytest.raises(MissingFileError, match="base: no file nowhere.yaml"):
        load_study(tiny_study(tmp_path, base="nowhere.yaml"))


def test_any_config_change_is_a_method(tmp_path, tiny_study):
    """A whole model node (a DiT instead of the base's UNet: none of the UNet's keys stay), an
    overlay file of nodes, and plain overrides all reach the run's config."""
    overlay = tmp_path / "faster.yaml"
    overlay.write_text("diffusion:\n  faster: true\n  k: 10\n")
    methods = {
        "unet": {"optimizer.lr": 0.001},
        "dit": {"model": DIT, "optimizer.lr": 0.002},
        "faster": str(overlay),
        "faster_k3": {"overlay": str(overlay), "overrides": {"diffusion.k": 3}},
    }
    overrides = yaml.safe_load(tiny_study(tmp_path).read_text())["overrides"]
    del overrides["model.channel_mult"]  # UNet keys: the DiT method replaces the model node
    del overrides["model.attention_resolutions"]
    study = load_study(tiny_study(tmp_path, methods=methods, reference="unet", overrides=overrides))
    sweep = study_sweep(study)
    configs = dict(zip((r.params["method"] for r in sweep.runs), load_run_configs(sweep)))
    assert configs["unet"].model._target_ == "speed.models.UNetModel"
    dit = configs["dit"].model
    assert dit._target_ == DIT["_target_"] and dit.hidden_size == 32 and "channel_mult" not in dit
    assert configs["dit"].optimizer.lr == 0.002
    assert configs["faster"].diffusion.faster and configs["faster"].diffusion.k == 10
    assert configs["faster_k3"].diffusion.k == 3 and configs["faster_k3"].optimizer.lr == 2e-3
    names = [r.name for r in study_runs(study, sweep).values()]
    assert "method=dit,seed=1" in names  # folders named by method, whatever it changes


def test_override_text_reads_back_as_the_same_value():
    from omegaconf import OmegaConf

    for value in (0.001, 2e-3, "uniform", "none", "1e-3", True, [1, 2], DIT, "a: b"):
        word = f"k={override_text(value)}"
        assert OmegaConf.to_container(OmegaConf.from_dotlist([word]))["k"] == value


def test_numbers_read_as_the_configs_read_them(tmp_path, tiny_study):
    path = tiny_study(tmp_path)
    path.write_text(path.read_text().replace("optimizer.lr: 0.001", "optimizer.lr: 1e-3"))
    study = load_study(path)
    assert study.methods["lr1e-3"].overrides == ("optimizer.lr=0.001",)


def test_a_method_may_sample_its_own_way_at_the_studys_guidance(tmp_path, tiny_study):
    """A flow-matching method scores with its own sampler keys over score.sampler's; the
    guidance and the sampling seed stay the study's."""
    from speed.study.scoring import Scorer

    methods = {
        "ddpm": {"optimizer.lr": 0.001},
        "flow": {"overrides": {"optimizer.lr": 0.002}, "sampler": {"sampler": "heun"}},
    }
    study = load_study(tiny_study(tmp_path, methods=methods, reference="ddpm"))
    scorer = Scorer(study, study_sweep(study))
    assert scorer.sampling_words(2.0, None, "ddpm") == [
        "sampler=ddim", "num_steps=2", "eta=1.0", "guidance_scale=2.0", "seed=0",
    ]  # fmt: skip
    assert scorer.sampling_words(1.0, 3, "flow") == [
        "sampler=heun", "num_steps=2", "eta=1.0", "guidance_scale=1.0", "seed=3",
    ]  # fmt: skip
    methods["flow"]["sampler"]["guidance_scale"] = 4.0
    with pytest.raises(ConfigError, match="methods.flow.sampler.guidance_scale: guidance is the"):
        load_study(tiny_study(tmp_path, methods=methods, reference="ddpm"))
