"""Study tests: one intra-op thread (tiny tensors), and `tiny_study(folder, **changes)`: a
two-method study file of the demo UNet (lr 1e-3 against 2e-3, two seeds, four steps, scored by the
study's domain classifier on a dozen samples) written into `folder`."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOMAIN = REPO / "benchmarks/assets/domain_classifier.pt"


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass


def tiny_study_dict(folder: Path) -> dict:
    return {
        "name": "tiny",
        "base": str(REPO / "configs/image/animals/base.yaml"),
        "methods": {"lr1e-3": {"optimizer.lr": 0.001}, "lr2e-3": {"optimizer.lr": 0.002}},
        "reference": "lr1e-3",
        "seeds": [0, 1],
        "budget": {"steps": 4},
        "overrides": {
            "log_every": 1,
            "warmup_steps": 0,
            "data.batch_size": 4,
            "model.channel_mult": [1, 2],
            "model.attention_resolutions": [2],  # downsample rates: the 14x14 level
            "per_proc_batch_size": 8,
            "tensorboard": False,
        },
        "score": {
            "sampler": {"sampler": "ddim", "num_steps": 2, "eta": 1.0, "guidance_scale": 2.0},
            "reference_images": 16,
            "curves": {
                "curve": {
                    "features": "domain",
                    "metrics": ["fid", "class_accuracy"],
                    "every": 2,
                    "samples": 8,
                }
            },  # fmt: skip
            "final": {"samples": 8, "features": {"domain": ["fid", "class_accuracy", "kid"]}},
            "extractors": {"domain": str(DOMAIN)},
        },
        "runs": str(folder / "runs"),
        "records": str(folder / "records"),
        "report": str(folder / "report" / "tiny"),
    }


@pytest.fixture
def tiny_study_raw():
    """fn(folder) -> the tiny study as a dict (before it is written)."""
    return tiny_study_dict


@pytest.fixture
def tiny_study():
    def write(folder: Path, **changes) -> Path:
        study = {**tiny_study_dict(folder), **changes}
        path = folder / "tiny.yaml"
        path.write_text(yaml.safe_dump(study, sort_keys=False))
        return path

    return write


def _small_speed_study(folder: Path, name: str = "speed_unet", **changes):
    """The SpeeD study file `studies/<name>.yaml` with 300 steps (curve every 100, guidance 1 at
    300), its runs and records in `folder`: the study's real methods, stages and fairness."""
    from speed.study.spec import parse_study

    raw = yaml.safe_load((REPO / "studies" / f"{name}.yaml").read_text())
    raw["budget"] = {"steps": 300}
    raw["score"]["curves"]["curve"]["every"] = 100
    raw["score"]["curves"]["curve_guidance1"]["every"] = 300
    raw.update(runs=str(folder / "runs"), records=str(folder / "records"), **changes)
    return parse_study(raw, REPO / "studies" / f"{name}.yaml")


@pytest.fixture
def in_repo(monkeypatch):
    """Run the test from the repository's root (study files name paths from there)."""
    monkeypatch.chdir(REPO)


@pytest.fixture
def small_speed_study(in_repo):
    """fn(folder, name="speed_unet", **changes) -> the SpeeD study file with 300 steps (curve
    every 100, guidance 1 at 300), runs and records in `folder`, read from the repository root."""
    return _small_speed_study


def _record(run, final_fid, curve=(30.0, 20.0, 10.0), accuracy=0.5, sec_per_step=0.5):
    """A finished run's record with the given final FID and FID curve at steps 100, 200, 300."""
    steps = {str(100 * i + 100): {"fid": f, "class_accuracy": accuracy}
             for i, f in enumerate(curve)}  # fmt: skip
    return {
        "name": run.name,
        "method": run.method,
        "seed": run.seed,
        "curve": steps,
        "curve_guidance1": {"300": {"fid": curve[-1] + 1, "class_accuracy": accuracy}},
        "final": {
            "domain": {"fid": final_fid, "class_accuracy": accuracy},
            "inception": {"fid": 2 * final_fid},
        },
        "region_losses": {"loss_t/000-099": 0.1, "loss_t/900-999": 0.01},
        "sec_per_step": sec_per_step,
        "steps": 300,
        "machine": "test",
        "date": "2026-12-01",
    }


@pytest.fixture(scope="session")
def make_record():
    """fn(run, final_fid, curve=(30, 20, 10) at steps 100..300, accuracy, sec_per_step)."""
    return _record
