"""speed.config: file discovery, merge order, node replacement, phase lift, overrides and
interpolation."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from speed.config import find_config_files, load_config
from speed.config_schema import RootConfig
from speed.errors import ConfigError

POINT = "config_targets.make_point"
BOX = "config_targets.Box"
REPO = Path(__file__).resolve().parents[2]

NESTED = {
    "base.yaml": "seed: 100\n",  # above configs/: never read
    "configs/base.yaml": f"""
        seed: 1
        log_every: 10
        num_steps: 5
        ema_rates: [0.9, 0.99]
        model:
          _target_: {POINT}
          x: 1
          y: 2.0
        """,
    "configs/img/base.yaml": """
        seed: 2
        log_every: 20
        ema_rates: [0.5]
        model:
          y: 3.0
        """,
    "configs/img/other/base.yaml": "seed: 50\n",  # a sibling folder: never read
    "configs/img/set/base.yaml": "seed: 3\n",
    "configs/img/set/exp.yaml": "seed: 4\n",
}


def test_find_config_files_walks_from_configs_root(write_tree):
    paths = write_tree(NESTED)
    expected = [
        paths[name].resolve()
        for name in (
            "configs/base.yaml",
            "configs/img/base.yaml",
            "configs/img/set/base.yaml",
            "configs/img/set/exp.yaml",
        )
    ]
    assert find_config_files("configs/img/set/exp.yaml") == expected
    # naming a base.yaml lists it once
    assert find_config_files("configs/img/set/base.yaml") == expected[:3]


def test_find_config_files_without_configs_folder(write_tree):
    paths = write_tree({"exp/base.yaml": "seed: 1\n", "exp/run.yaml": "seed: 2\n"})
    expected = [paths["exp/base.yaml"].resolve(), paths["exp/run.yaml"].resolve()]
    assert find_config_files("exp/run.yaml") == expected
    with pytest.raises(FileNotFoundError, match="exp/nothing.yaml"):
        find_config_files("exp/nothing.yaml")


def test_merge_order_outermost_first(write_tree):
    write_tree(NESTED)
    cfg = load_config("configs/img/set/exp.yaml", "train")
    assert cfg.seed == 4  # the named file wins
    assert cfg.log_every == 20  # the middle base.yaml over the outer one
    assert cfg.num_steps == 5  # only set in the outer base.yaml
    assert cfg.epoch == RootConfig().epoch  # set nowhere: the schema default
    assert list(cfg.ema_rates) == [0.5]  # lists are replaced, not merged
    assert dict(cfg.model) == {"_target_": POINT, "x": 1, "y": 3.0}  # nodes merge key by key


def test_node_replaced_when_target_changes(write_tree):
    write_tree(
        {
            "configs/base.yaml": f"""
                model:
                  _target_: {POINT}
                  x: 1
                  label: dit
                data:
                  _target_: {POINT}
                  x: 2
                  batch_size: 8
                """,
            "configs/unet.yaml": f"""
                model:
                  _target_: {BOX}
                  width: 3
                data:
                  _target_: {BOX}
                  width: 4
                """,
        }
    )
    cfg = load_config("configs/unet.yaml", "train")
    assert dict(cfg.model) == {"_target_": BOX, "width": 3}
    assert dict(cfg.data) == {"_target_": BOX, "width": 4, "batch_size": 8}  # runner key kept
    # the same rule applies on the command line
    cfg = load_config("configs/base.yaml", "train", [f"model._target_={BOX}", "model.width=5"])
    assert dict(cfg.model) == {"_target_": BOX, "width": 5}


PHASED = {
    "configs/base.yaml": f"""
        num_steps: 10
        guidance_scale: 1.0
        experiment_dir: runs/${{model.label}}/${{num_steps}}
        model:
          _target_: {POINT}
          x: 1
          label: small
        train:
          num_steps: 7
        inference:
          num_steps: 50
          guidance_scale: 4.0
          model:
            x: 2
        sample:
          guidance_scale: [1.0, 4.0]
        """,
    "configs/exp.yaml": "num_steps: 20\n",
}


@pytest.mark.parametrize(
    "phase, num_steps, guidance_scale, x",
    [
        ("train", 7, 1.0, 1),
        ("inference", 50, 4.0, 2),
        ("sample", 20, [1.0, 4.0], 1),
        ("config", 20, 1.0, 1),  # not a phase with a subtree: nothing lifted
    ],
)
def test_phase_subtree_lifted(write_tree, phase, num_steps, guidance_scale, x):
    write_tree(PHASED)
    cfg = load_config("configs/exp.yaml", phase)
    # the subtree (even from the outer base.yaml) is lifted after all files are merged
    assert cfg.num_steps == num_steps
    gs = cfg.guidance_scale
    assert (list(gs) if isinstance(guidance_scale, list) else gs) == guidance_scale
    assert cfg.model.x == x and cfg.model.label == "small"  # node subtrees merge into the node
    assert not {"train", "inference", "sample"} & set(cfg)  # subtrees removed


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["num_steps=3"], 3),  # root form beats the inference subtree
        (["inference.num_steps=4"], 4),  # subtree form
        (["num_steps=3", "inference.num_steps=4"], 3),  # both: the root form wins
        (["inference.num_steps=4", "num_steps=3"], 3),  # ... whatever their order
        (["train.num_steps=9"], 50),  # another phase's subtree: no effect
    ],
)
def test_command_line_overrides(write_tree, overrides, expected):
    write_tree(PHASED)
    assert load_config("configs/exp.yaml", "inference", overrides).num_steps == expected


def test_override_values_parse_as_yaml(write_tree):
    write_tree(PHASED)
    words = ["guidance_scale=[1,1.5,4]", "resume=true", "ckpt_path=null", "model.label='007'"]
    cfg = load_config("configs/exp.yaml", "sample", words)
    assert list(cfg.guidance_scale) == [1, 1.5, 4]
    assert cfg.resume is True
    assert cfg.ckpt_path is None
    assert cfg.model.label == "007"


def test_interpolation_resolves_after_lift_and_overrides(write_tree, monkeypatch):
    write_tree(PHASED)
    assert load_config("configs/exp.yaml", "train").experiment_dir == "runs/small/7"
    assert load_config("configs/exp.yaml", "inference").experiment_dir == "runs/small/50"
    cfg = load_config("configs/exp.yaml", "inference", ["model.label=big", "num_steps=8"])
    assert cfg.experiment_dir == "runs/big/8"
    assert not OmegaConf.is_interpolation(cfg, "experiment_dir")  # stored resolved

    monkeypatch.setenv("SPEED_TEST_RUNS", "/data/runs")
    env = "experiment_dir=${oc.env:SPEED_TEST_RUNS,runs}/x"
    assert load_config("configs/exp.yaml", "train", [env]).experiment_dir == "/data/runs/x"
    monkeypatch.delenv("SPEED_TEST_RUNS")
    assert load_config("configs/exp.yaml", "train", [env]).experiment_dir == "runs/x"


def test_a_node_a_later_layer_switches_is_not_checked_against_its_old_target(write_tree):
    """The old target's keys are dropped at the switch, so they are neither checked against it
    nor is its module imported (configs/base.yaml's DiT would pull timm into every UNet run);
    its runner keys stay and are checked; the same target later keeps the full check."""
    write_tree(
        {
            "configs/base.yaml": """
                model:
                  _target_: no_such_module.build
                  depth: 28
                data:
                  _target_: config_targets.Box
                  width: 2
                  batch_size: 8
                """,
            "configs/unet.yaml": f"""
                model:
                  _target_: {BOX}
                  width: 3
                """,
            "configs/typo.yaml": f"""
                data:
                  _target_: {BOX}
                  widht: 3
                """,
        }
    )
    cfg = load_config("configs/unet.yaml", "train")
    assert dict(cfg.model) == {"_target_": BOX, "width": 3}
    with pytest.raises(ConfigError, match="cannot import 'no_such_module.build'"):
        load_config("configs/base.yaml", "train")  # built as it is: checked
    with pytest.raises(ConfigError, match="data.widht"):
        load_config("configs/typo.yaml", "train", ["model._target_=config_targets.Box"])
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config("configs/unet.yaml", "train", ["data.batch_size=many"])


def test_a_unet_run_imports_neither_timm_nor_peft():
    """The demo's training and sampling processes start without the transformers' timm, the
    adapters' peft or the metrics' torch-fidelity and torchmetrics (and torchvision with them)."""
    heavy = ("timm", "peft", "torchvision", "torch_fidelity", "torchmetrics", "transformers")
    code = (
        "import sys; from speed.config import load_config; "
        "import speed.runners.train, speed.runners.inference, speed.runners.sample; "
        "load_config('configs/image/animals/base.yaml', 'train'); "
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
