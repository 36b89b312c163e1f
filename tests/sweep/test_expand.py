"""speed.sweep.expand: Hydra's override grammar -> one run per combination, checked up front."""

from pathlib import Path

import pytest

from speed.config import ConfigError
from speed.run.outputs import MAX_NAME_LENGTH, folder_name
from speed.sweep.expand import expand_sweep, load_run_configs

ANIMALS = Path(__file__).resolve().parents[2] / "configs/image/animals"
FASTER = ANIMALS / "faster.yaml"


def test_two_by_two_sweep_is_the_cartesian_product_in_command_order(tmp_path):
    words = ["diffusion.k=1,5", "max_training_steps=2", "diffusion.lam=0.6,0.8"]
    sweep = expand_sweep(FASTER, "train", [*words, f"experiment_dir={tmp_path}"])
    assert sweep.sweep_dir == tmp_path / "sweep"
    assert sweep.keys == ("diffusion.k", "diffusion.lam")
    assert [run.name for run in sweep.runs] == [
        "diffusion.k=1,diffusion.lam=0.6",
        "diffusion.k=1,diffusion.lam=0.8",
        "diffusion.k=5,diffusion.lam=0.6",
        "diffusion.k=5,diffusion.lam=0.8",
    ]
    assert sweep.runs[1].params == {"diffusion.k": 1, "diffusion.lam": 0.8}
    # the fixed words first (experiment_dir is the sweep's, not the run's), then the values
    assert sweep.runs[1].overrides == ("max_training_steps=2", "diffusion.k=1", "diffusion.lam=0.8")
    cfgs = load_run_configs(sweep)
    assert [(c.diffusion.k, c.diffusion.lam, c.max_training_steps) for c in cfgs] == [
        (1, 0.6, 2),
        (1, 0.8, 2),
        (5, 0.6, 2),
        (5, 0.8, 2),
    ]
    assert cfgs[3].experiment_dir == str(tmp_path / "sweep/diffusion.k=5,diffusion.lam=0.8")


def test_range_and_choice_of_lists(tmp_path):
    words = ["seed=range(1,4)", "sample_classes=choice([0,1],[2])", f"experiment_dir={tmp_path}"]
    sweep = expand_sweep(FASTER, "sample", words)
    assert [run.params["seed"] for run in sweep.runs] == [1, 1, 2, 2, 3, 3]
    cfgs = load_run_configs(sweep)
    assert [list(c.sample_classes) for c in cfgs[:2]] == [[0, 1], [2]]
    assert sweep.runs[0].name == "seed=1,sample_classes=_0,1_"


def test_config_glob_sweeps_the_experiment_files_next_to_the_config(tmp_path):
    sweep = expand_sweep(ANIMALS / "base.yaml", "train", ["config=glob(ablations/k1*)"])
    assert sweep.sweep_dir == Path("runs/animals/sweep")  # base.yaml's experiment_dir
    assert [run.name for run in sweep.runs] == ["config=ablations_k1", "config=ablations_k10"]
    assert [run.config for run in sweep.runs] == [
        ANIMALS / "ablations/k1.yaml",
        ANIMALS / "ablations/k10.yaml",
    ]
    cfgs = load_run_configs(sweep)
    assert [c.diffusion.k for c in cfgs] == [1, 10]
    assert cfgs[0].experiment_dir == "runs/animals/sweep/config=ablations_k1"  # not the file's
    listed = expand_sweep(ANIMALS / "base.yaml", "train", ["config=ablations/no_dual,faster"])
    assert [run.config for run in listed.runs] == [
        ANIMALS / "ablations/no_dual.yaml",
        ANIMALS / "faster.yaml",
    ]


def test_a_later_word_for_the_same_key_wins(tmp_path):
    sweep = expand_sweep(FASTER, "train", ["diffusion.k=1,5", "diffusion.k=10"])
    assert [run.name for run in sweep.runs] == ["default"]
    assert load_run_configs(sweep)[0].diffusion.k == 10


@pytest.mark.parametrize(
    "word, message",
    [
        ("diffusion.k=1,,5", "cannot parse override 'diffusion.k=1,,5'"),
        ("diffusion.kk=1,5", "run 'diffusion.kk=1': unknown config key 'diffusion.kk' "),
        ("diffusion.lam=0.6,5", "run 'diffusion.lam=5': diffusion.lam=5 must lie in [0.5, 1]"),
        ("ckpt_every=1,abc", "run 'ckpt_every=abc': config key 'ckpt_every' expects int"),
        ("diffusion.k=interval(1,5)", "an interval cannot be enumerated"),
        ("diffusion.k=glob(*)", "works only for config=glob(...)"),
        ("config=ablations/k1,nope", "config=nope: no file"),
    ],
)
def test_mistakes_are_one_line_errors(word, message):
    with pytest.raises(ConfigError) as info:
        load_run_configs(expand_sweep(FASTER, "train", [word]))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_folder_names_are_safe_and_bounded():
    assert folder_name(["config=ablations/k1", "guidance_scale=[1, 2]"]) == (
        "config=ablations_k1,guidance_scale=_1,_2_"
    )
    assert folder_name([]) == "default"
    long_a, long_b = folder_name(["x=" + "a" * 300]), folder_name(["x=" + "a" * 299 + "b"])
    assert len(long_a) == len(long_b) == MAX_NAME_LENGTH and long_a != long_b
