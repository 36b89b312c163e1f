"""A text-to-image study runs through the study command: studies/text_demo.yaml shrunk to a tiny
UNet, four steps and a dozen samples, scored under the pairs features with pair alignment, whose
curve values equal `evaluations.text_alignment` on the same samples."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from evaluations.pair_alignment import PairFeatures, alignment_report, read_halves
from speed.study import __main__ as cli
from speed.study import samples
from speed.study.plan import load_records
from speed.study.spec import HIGHER_IS_BETTER, load_study

REPO = Path(__file__).resolve().parents[2]


def tiny_text_study(folder):
    raw = yaml.safe_load((REPO / "studies/text_demo.yaml").read_text())
    raw["base"] = str(REPO / raw["base"])
    raw["score"]["sampler"]["prompts_file"] = str(REPO / raw["score"]["sampler"]["prompts_file"])
    raw["score"]["sampler"]["num_steps"] = 2
    raw.update(seeds=[0], budget={"steps": 4}, runs=str(folder / "runs"),
               records=str(folder / "records"), report=str(folder / "report" / "text"))  # fmt: skip
    raw["overrides"] = {
        "model.channel_mult": [1, 2], "model.attention_resolutions": [2],
        "model.caption_channels": 16, "model.text_depth": 1, "model.text_heads": 2,
        "data.num_pairs": 64, "data.batch_size": 4, "per_proc_batch_size": 20,
        "log_every": 1, "warmup_steps": 0, "tensorboard": False,
    }  # fmt: skip
    raw["score"]["reference_images"] = 24
    raw["score"]["curves"]["curve"].update(every=2, samples=20)
    raw["score"]["final"]["samples"] = 20
    path = folder / "text.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_text_study_file_parses():
    study = load_study(REPO / "studies/text_demo.yaml")
    assert study.score.final == {"pairs": ("fid", "pair_alignment")}
    assert study.score.speedup_metric == ("curve", "fid")
    assert {"pair_accuracy", "held_out_half_accuracy"} <= HIGHER_IS_BETTER
    assert "swapped" not in HIGHER_IS_BETTER


@pytest.mark.slow
def test_a_tiny_text_study_scores_pair_alignment(tmp_path, single_thread):
    path = tiny_text_study(tmp_path)
    assert cli.main([str(path), "--poll", "0"]) == 0
    records = load_records(tmp_path / "records")
    assert sorted(records) == ["method=baseline,seed=0", "method=speed_released,seed=0"]
    record = records["method=speed_released,seed=0"]
    assert set(record["curve"]) == {"2", "4"}
    final = record["final"]["pairs"]
    assert {"fid", "pair_accuracy", "half_accuracy", "held_out_pair_accuracy", "swapped"} <= set(
        final
    )
    assert 0 <= final["pair_accuracy"] <= final["half_accuracy"] <= 1

    run = tmp_path / "runs/sweep/method=speed_released,seed=0"
    npz = next(run.glob("curve/*/inference/0000004.npz"))
    data = np.load(npz)
    prompts = data["prompts"].tolist()
    assert len(prompts) == 20 and prompts[10] == "a cat left of a zebra"  # held out, 11th line
    report = alignment_report(*read_halves(data["arr_0"], PairFeatures()), prompts)
    assert final["pair_accuracy"] == report["all"]["pair_accuracy"]
    held = report["held_out"]
    assert final["held_out_half_accuracy"] == pytest.approx(
        (held["left_accuracy"] + held["right_accuracy"]) / 2
    )
    text = (tmp_path / "report/text.md").read_text()
    assert "final pairs held_out_pair_accuracy" in text and "| speed_released |" in text
    assert "curve held_out_half_accuracy (seed mean) against training step" in text
    assert json.loads((tmp_path / "report/text.json").read_text())["summary"]["speedup"]
    assert samples.main([str(path), "--per-class", "1"]) == 0  # a row per prompt
    assert (tmp_path / "report/text_samples.png").stat().st_size > 10_000
