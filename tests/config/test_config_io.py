"""speed.config: instantiate, YAML printing and saving, read-only results."""

import pytest
import yaml
from config_targets import Box
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from speed.config import ConfigError, config_to_yaml, instantiate, load_config, save_config

FILES = {
    "configs/base.yaml": """
        experiment_dir: runs/${model.label}
        guidance_scale: [1.0, 4.0]
        model:
          _target_: config_targets.make_point
          x: 1
          label: small
          tags: [a, b]
        data:
          _target_: config_targets.Box
          width: 3
          batch_size: 2
        diffusion:
          _target_: config_targets.failing
          value: -1
        """,
}


@pytest.fixture
def cfg(write_tree):
    write_tree(FILES)
    return load_config("configs/base.yaml", "train")


def test_instantiate_with_kwargs(cfg):
    point = instantiate(cfg.model, y=0.5, label="big")
    assert point == {"x": 1, "y": 0.5, "label": "big", "tags": ["a", "b"]}
    assert type(point["tags"]) is list  # plain Python containers, not ListConfig


def test_instantiate_class_after_dropping_runner_keys(cfg):
    node = OmegaConf.masked_copy(cfg.data, ["_target_", "width"])
    box = instantiate(node, height=7)
    assert isinstance(box, Box) and (box.width, box.height) == (3, 7)


def test_instantiate_errors(cfg):
    with pytest.raises(ConfigError) as info:
        instantiate(cfg.diffusion)  # the target's check of its value: the user's to fix
    assert str(info.value) == "diffusion: value must be positive, got -1"
    assert isinstance(info.value, ValueError) and isinstance(info.value.__cause__, ValueError)
    bug = OmegaConf.create({"model": {"_target_": "config_targets.broken"}})
    with pytest.raises(RuntimeError, match="a bug in the target") as info:
        instantiate(bug.model)  # any other error is a bug: unchanged
    assert type(info.value) is RuntimeError
    bad = OmegaConf.create({"model": {"_target_": "config_targets.missing"}})
    with pytest.raises(ConfigError, match=r"^model\._target_: cannot import 'config_targets"):
        instantiate(bad.model)
    with pytest.raises(ConfigError, match="has no _target_"):
        instantiate(OmegaConf.create({"x": 1}))


def test_yaml_round_trip(cfg):
    text = config_to_yaml(cfg)
    assert "${" not in text
    loaded = yaml.safe_load(text)
    assert loaded == OmegaConf.to_container(cfg)
    assert loaded["experiment_dir"] == "runs/small"
    assert loaded["guidance_scale"] == [1.0, 4.0]


def test_save_config_writes_resolved_yaml(cfg, tmp_path):
    path = tmp_path / "out" / "train" / "config.yaml"
    save_config(cfg, path)
    assert yaml.safe_load(path.read_text()) == OmegaConf.to_container(cfg)
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left
    # the saved file loads back to the same config
    assert OmegaConf.to_container(load_config(path, "train")) == OmegaConf.to_container(cfg)


def test_result_is_read_only(cfg):
    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 5
