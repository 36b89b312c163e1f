"""speed.run.identity: the keys that define an experiment are recorded in each training checkpoint,
and a resume under a config that changes any of them stops in one line naming them (old -> new),
unless `resume_changes` names them; lr, lengths and intervals change freely; a refused resume
leaves train/config.yaml as it was; checkpoints without the record still resume, with a line."""

import shutil

import pytest

from speed.config import ConfigError, load_config
from speed.models import load_checkpoint
from speed.models.loading import save_checkpoint
from speed.run.identity import compare_experiment, experiment_record
from speed.runners.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_config, tiny_overrides):
    """A 2-step demo run (copy it before changing)."""
    run = tmp_path_factory.mktemp("identity") / "run"
    train(load_config(demo_config, "train", tiny_overrides(run) + ["sample_every=0"]))
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _resume(demo_config, tiny_overrides, run, *extra):
    words = [*tiny_overrides(run, steps=3), "sample_every=0", "resume=true", *extra]
    return load_config(demo_config, "train", words)


def test_the_record_holds_the_experiment_and_not_the_conveniences(demo_config, tiny_overrides):
    cfg = load_config(demo_config, "train", tiny_overrides("unused"))
    record = experiment_record(cfg, global_batch=12)
    assert record["global_batch"] == 12
    assert record["diffusion.noise_schedule"] == cfg.diffusion.noise_schedule
    assert record["seed"] == cfg.seed and record["data._target_"] == cfg.data._target_
    assert record["model._target_"] == cfg.model._target_
    assert record["optimizer._target_"] == cfg.optimizer._target_
    free = ("optimizer.lr", "max_training_steps", "log_every", "ckpt_every", "data.batch_size")
    assert not set(free) & set(record)


def test_checkpoints_record_the_experiment_with_the_global_batch(run):
    ckpt = load_checkpoint(run / "train/checkpoints/0000002.pt")
    assert ckpt["experiment"]["global_batch"] == 4  # data.batch_size 4 x 1 process x 1
    assert ckpt["experiment"]["diffusion.noise_schedule"] == "linear"


def test_a_changed_experiment_is_refused_in_one_line(
    main, run, demo_config, tiny_overrides, capsys
):
    saved = (run / "train/config.yaml").read_bytes()
    words = [
        "-c", demo_config, "-p", "train", *tiny_overrides(run, 3), "sample_every=0",
        "resume=true", "diffusion.noise_schedule=cosine", "data.batch_size=2", "seed=5",
    ]  # fmt: skip
    assert main(words) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]
    assert "Traceback" not in err and line.startswith("error: resume: ")
    assert "diffusion.noise_schedule (linear -> cosine)" in line
    assert "global_batch (4 -> 2)" in line and "seed (0 -> 5)" in line
    assert "resume_changes=[diffusion.noise_schedule,global_batch,seed]" in line
    assert (run / "train/config.yaml").read_bytes() == saved  # not rewritten
    assert not (run / "train/checkpoints/0000003.pt").exists()


def test_named_changes_and_free_keys_resume(run, demo_config, tiny_overrides):
    cfg = _resume(
        demo_config, tiny_overrides, run,
        "diffusion.noise_schedule=cosine", "resume_changes=[diffusion]",
        "optimizer.lr=3e-4", "log_every=2", "ckpt_every=3",
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"resume: changing diffusion.noise_schedule"):
        last = train(cfg)
    ckpt = load_checkpoint(last)
    assert ckpt["step"] == 3 and ckpt["experiment"]["diffusion.noise_schedule"] == "cosine"


def test_an_unknown_name_in_resume_changes_is_refused(run, demo_config, tiny_overrides):
    cfg = _resume(demo_config, tiny_overrides, run, "resume_changes=[diffusion.noise_shedule]")
    with pytest.raises(ConfigError, match="did you mean 'diffusion.noise_schedule'"):
        train(cfg)


def test_a_checkpoint_without_the_record_resumes_with_a_line(run, demo_config, tiny_overrides):
    path = run / "train/checkpoints/0000002.pt"
    ckpt = load_checkpoint(path)
    del ckpt["experiment"]
    save_checkpoint(ckpt, path)
    cfg = _resume(demo_config, tiny_overrides, run, "diffusion.noise_schedule=cosine")
    with pytest.warns(UserWarning, match="records no experiment .* cannot be compared"):
        assert load_checkpoint(train(cfg))["step"] == 3


def test_compare_lists_added_and_removed_keys():
    old = {"model.depth": 2, "model.mlp_ratio": 4.0}
    new = {"model.depth": 2, "model.learn_sigma": True}
    with pytest.raises(ConfigError) as refused:
        compare_experiment(old, new, [], "ckpt.pt")
    assert "model.learn_sigma (unset -> True)" in str(refused.value)
    assert "model.mlp_ratio (4.0 -> unset)" in str(refused.value)
    with pytest.warns(UserWarning, match="resume: changing model.learn_sigma"):
        compare_experiment(old, new, ["model"], "ckpt.pt")  # named as a node: accepted
