"""docs/own_images.md's worked example, run as written on a tiny folder (8 images of 2 classes):
the five commands of its "A worked example" block, each with overrides that make it seconds long
(2 training steps, 6 samples, 3 sampling steps), in a scratch folder holding `my_images/`."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluations import fid
from speed.experiments import export_reference

REPO = Path(__file__).resolve().parents[1]
SHORT = [
    "max_training_steps=2",
    "ckpt_every=1",
    "log_every=1",
    "sample_every=2",
    "warmup_steps=0",
    "data.batch_size=4",
    "data.num_workers=0",
    "num_samples=6",
    "per_proc_batch_size=4",
    "num_steps=3",
    "train.num_steps=3",
    "num_sample_seeds=3",
    "wandb=disabled",
]


def worked_example() -> list[list[str]]:
    page = (REPO / "docs/own_images.md").read_text()
    section = page.split("## A worked example", 1)[1]
    lines = re.findall(r"^    (python .+)$", section, flags=re.M)
    return [line.split()[1:] for line in lines]


def make_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 60, (40, 48, 3)) + 120 * label
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")


def test_the_worked_example_runs_as_written(main, tmp_path, monkeypatch, single_thread):
    commands = worked_example()
    assert [c[:2] for c in commands] == [
        ["main.py", "-c"],
        ["main.py", "-c"],
        ["main.py", "-c"],
        ["-m", "speed.experiments.export_reference"],
        ["-m", "evaluations.fid"],
    ]
    make_folder(tmp_path / "my_images")
    monkeypatch.chdir(tmp_path)
    absolute = [[str(REPO / w) if w.startswith("configs/") else w for w in c] for c in commands]
    for words in absolute[:3]:
        assert main([*words[1:], *SHORT]) == 0, words
    ckpt = tmp_path / "runs/folder/train/checkpoints/0000002.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    weights = state["ema"]
    assert weights["input_blocks.0.0.weight"].shape[1] == 3  # RGB in
    assert weights["label_emb.weight"].shape[0] == 2 + 1  # 2 classes and the null label
    assert state["data_spec"] == {"channels": 3, "side": 32, "num_classes": 2}
    assert (tmp_path / "runs/folder/sample/0000002.png").is_file()
    assert export_reference.main(absolute[3][2:]) == 0
    reference = np.load(tmp_path / "runs/folder/reference.npz")
    assert reference["arr_0"].shape == (8, 32, 32, 3)
    assert sorted(reference["arr_1"].tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    samples = [w.replace("0002000", "0000002") for w in absolute[4][2:]]  # 2 steps, not 2000
    assert fid.main(samples) == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["num_classes=1000"], "num_classes=1000 but the dataset (data.path=my_images) has 2 "),
        (["image_size=64"], "image_size=64 but the dataset's images are 32 px (data.image_size)"),
        (["data.image_size=30"], "set data.image_size to a multiple of 4"),
        (["model.attention_resolutions='7'"], "model.attention_resolutions to some of '32,16,8'"),
    ],
)
def test_a_mismatch_with_the_folder_is_one_line(
    main, tmp_path, monkeypatch, capsys, overrides, message
):
    make_folder(tmp_path / "my_images")
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/image/animals/folder.yaml")
    words = ["-c", config, "-p", "train", "data.path=my_images", *SHORT, *overrides]
    assert main(words) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs/folder/train/checkpoints").exists()


def test_a_missing_folder_names_its_variable(main, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMAGES_PATH", raising=False)
    config = str(REPO / "configs/image/animals/folder.yaml")
    assert main(["-c", config, "-p", "train", *SHORT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data.path: no image folder at data/images")
    assert "environment variable IMAGES_PATH, which is not set" in err
    monkeypatch.setenv("IMAGES_PATH", str(tmp_path / "elsewhere"))
    assert main(["-c", config, "-p", "train", *SHORT]) == 2
    assert f"IMAGES_PATH, which is set to {tmp_path / 'elsewhere'}" in capsys.readouterr().err
