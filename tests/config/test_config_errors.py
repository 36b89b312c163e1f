"""speed.config: every user mistake is a one-line ConfigError naming the key (and a suggestion)."""

import textwrap

import pytest

from speed.config import ConfigError, load_config

POINT = "config_targets.make_point"

BASE = textwrap.dedent(
    f"""
    num_steps: 10
    model:
      _target_: {POINT}
      x: 1
    data:
      _target_: config_targets.flexible
      batch_size: 4
    """
)


def load_error(write_tree, files: dict[str, str], overrides=(), phase="train") -> str:
    write_tree({"configs/base.yaml": BASE, **files})
    with pytest.raises(ConfigError) as info:
        load_config("configs/exp.yaml", phase, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_typo_in_file_names_key_file_and_suggestion(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": "guidence_scale: 2.0\n"})
    assert message == (
        "unknown config key 'guidence_scale' (in configs/exp.yaml); did you mean 'guidance_scale'?"
    )


def test_typo_in_outer_base_names_that_file(write_tree):
    write_tree({"configs/base.yaml": BASE + "ckpt_evry: 5\n", "configs/img/exp.yaml": ""})
    with pytest.raises(ConfigError, match=r"'ckpt_evry' \(in configs/base.yaml\); .*'ckpt_every'"):
        load_config("configs/img/exp.yaml", "train")


def test_typo_on_command_line(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": ""}, ["num_step=3"])
    assert message == ("unknown config key 'num_step' (command line); did you mean 'num_steps'?")


@pytest.mark.parametrize("phase", ["train", "inference"])
def test_typo_inside_phase_subtree_reported_for_any_phase(write_tree, phase):
    files = {"configs/exp.yaml": "inference:\n  guidence_scale: 2.0\n"}
    message = load_error(write_tree, files, phase=phase)
    assert "'inference.guidence_scale' (in configs/exp.yaml)" in message
    assert message.endswith("did you mean 'inference.guidance_scale'?")


def test_typo_inside_phase_subtree_on_command_line(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": ""}, ["sample.num_sample_seed=2"])
    assert "'sample.num_sample_seed' (command line)" in message
    assert message.endswith("did you mean 'sample.num_sample_seeds'?")


def test_typo_inside_target_node(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": "model:\n  lable: big\n"})
    assert message == (
        "unknown config key 'model.lable' (in configs/exp.yaml); did you mean 'model.label'?"
    )
    # a node inside a phase subtree is checked against the root node's _target_
    message = load_error(write_tree, {"configs/exp.yaml": ""}, ["sample.model.tag=[a]"])
    assert "'sample.model.tag' (command line)" in message
    assert message.endswith("did you mean 'sample.model.tags'?")


def test_target_taking_kwargs_accepts_any_key(write_tree):
    write_tree({"configs/base.yaml": BASE, "configs/exp.yaml": "data:\n  anything: 1\n"})
    assert load_config("configs/exp.yaml", "train").data.anything == 1


@pytest.mark.parametrize(
    "word, message",
    [
        ("ckpt_every=abc", "config key 'ckpt_every' expects int, got 'abc' (command line)"),
        ("seed=true", "config key 'seed' expects int, got true (command line)"),
        ("model.x=1.5", "config key 'model.x' expects int, got 1.5 (command line)"),
        ("data.batch_size=[4]", "config key 'data.batch_size' expects int, got [4] (command line)"),
        ("sample_classes=[1,a]", "config key 'sample_classes' expects list of int or null"),
        ("precision=fp8", "config key 'precision' expects one of fp32|bf16|fp16, got 'fp8'"),
        ("model=3", "config key 'model' must be a mapping with a _target_, got 3"),
        ("model._target_=5", "config key 'model._target_' expects str, got 5 (command line)"),
    ],
)
def test_wrong_type_names_key(write_tree, word, message):
    assert load_error(write_tree, {"configs/exp.yaml": ""}, [word]).startswith(message)


def test_int_accepted_for_float(write_tree):
    write_tree({"configs/base.yaml": BASE, "configs/exp.yaml": ""})
    cfg = load_config("configs/exp.yaml", "train", ["eta=1", "model.y=2", "guidance_scale=[1,2]"])
    assert (cfg.eta, cfg.model.y, list(cfg.guidance_scale)) == (1, 2, [1, 2])


def test_wrong_type_behind_interpolation_found_after_resolution(write_tree):
    files = {"configs/exp.yaml": "log_every: ${model.label}\nmodel:\n  label: often\n"}
    message = load_error(write_tree, files)
    assert message == "config key 'log_every' expects int, got 'often'"


def test_missing_required_value(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": "model:\n  x: ???\n"})
    assert message == (
        "config key 'model.x' is required but not set; set it in the config or on the "
        "command line (model.x=...)"
    )
    write_tree({"configs/base.yaml": BASE, "configs/exp.yaml": "model:\n  x: ???\n"})
    assert load_config("configs/exp.yaml", "train", ["model.x=3"]).model.x == 3


def test_node_without_target_is_missing_its_target(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": "autoencoder:\n  scale: 1.0\n"})
    assert message.startswith("config key 'autoencoder._target_' is required but not set")


def test_unimportable_target(write_tree):
    message = load_error(
        write_tree, {"configs/exp.yaml": ""}, ["model._target_=config_targets.nope"]
    )
    assert message.startswith("model._target_: cannot import 'config_targets.nope' (")
    assert message.endswith("(command line)")


def test_unresolvable_interpolation_names_key(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": "experiment_dir: runs/${model.nme}\n"})
    assert message.startswith("cannot resolve config key 'experiment_dir': ")
    assert "model.nme" in message


@pytest.mark.parametrize("word", ["seed", "=3"])
def test_override_without_key_value(write_tree, word):
    message = load_error(write_tree, {"configs/exp.yaml": ""}, [word])
    assert message.startswith(f"command-line word '{word}' is not an override")


def test_file_must_hold_a_mapping(write_tree):
    message = load_error(write_tree, {"configs/exp.yaml": "- 1\n- 2\n"})
    assert message == "configs/exp.yaml must hold a mapping of keys at the top level"
    message = load_error(write_tree, {"configs/exp.yaml": "seed: [1,\n"})
    assert message.startswith("cannot parse configs/exp.yaml: ")


def test_a_phase_respacing_is_read_as_num_steps_or_refused(demo_config):
    """SpeeD's configs set sampling steps as `inference: {diffusion: {timestep_respacing: ...}}`."""
    with pytest.warns(UserWarning, match=r"timestep_respacing='250' is read as num_steps=250"):
        cfg = load_config(demo_config, "inference", ["inference.diffusion.timestep_respacing=250"])
    assert cfg.num_steps == 250 and cfg.diffusion.timestep_respacing == ""
    with pytest.warns(UserWarning, match="num_steps=50"):
        assert (
            load_config(
                demo_config, "sample", ["sample.diffusion.timestep_respacing=ddim50"]
            ).num_steps
            == 50
        )
    with pytest.raises(
        ConfigError, match=r"names no single step count; sampling steps are `inference.num_steps`"
    ):
        load_config(demo_config, "inference", ["inference.diffusion.timestep_respacing='10,15,20'"])
    with pytest.raises(ConfigError, match="also sets num_steps"):
        load_config(
            demo_config,
            "inference",
            ["inference.diffusion.timestep_respacing=250", "inference.num_steps=25"],
        )
    # training keeps its own meaning of the key (a respaced training diffusion)
    assert (
        load_config(
            demo_config, "train", ["train.diffusion.timestep_respacing=250"]
        ).diffusion.timestep_respacing
        == 250
    )
