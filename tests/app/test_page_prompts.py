"""The page on a text-to-image run: its options offer prompts, a generation with prompts equals
the `sample` phase's grid (a row per prompt, written to its left) and strip, and prompts that
are too long, missing or sent to a class model (or classes sent to a text model) are refused
in one line."""

import numpy as np
import pytest
from PIL import Image

from speed.app.client import AppClient, AppRequestError
from speed.config import load_config
from speed.runners.sample import sample

PROMPTS = ["a cat left of a zebra", "a dog left of a horse"]


def test_options_offer_the_runs_prompts(text_app_url, text_config):
    options = AppClient(text_app_url).options()
    assert options["prompts"] is True and options["classes"] == []
    assert options["max_prompt_chars"] == 500
    run_prompts = load_config(text_config, "sample", []).prompts
    assert options["defaults"]["prompts"] == list(run_prompts) and len(run_prompts) == 6


def test_a_generation_with_prompts_equals_the_sample_phase(text_app_url, tiny_text_run):
    run, overrides = tiny_text_run
    settings = {"prompts": [f" {PROMPTS[0]}", PROMPTS[1]], "seeds": 2, "num_steps": 3, "seed": 5}
    settings |= {"checkpoint": "0000001", "guidance_scale": 2.0, "sampler": "ddim"}
    result = AppClient(text_app_url).generate(**settings)

    phase = [f"prompts=[{PROMPTS[0]!r},{PROMPTS[1]!r}]", "num_sample_seeds=2", "num_steps=3"]
    phase += ["seed=5", f"ckpt_path={run}/train/checkpoints/0000001.pt", "guidance_scale=2.0"]
    phase += ["denoise_strip=true", "sampler=ddim"]
    config = str(run / "train/config.yaml")
    grid_path = sample(load_config(config, "sample", overrides + phase))
    assert np.array_equal(result["grid"], np.asarray(Image.open(grid_path)))
    strip = np.asarray(Image.open(grid_path.with_name("0000001-denoising.png")))
    assert np.array_equal(result["strip"], strip)
    assert result["grid"].shape[0] == 2 * 56 + 3 * 2  # one row per prompt (tiles and padding)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"classes": [1]}, "classes: this run's model is text-to-image and has no classes"),
        ({"prompts": ["x" * 501]}, "a prompt of 501 characters is over this server's limit"),
        ({"prompts": [PROMPTS[0], ""]}, "prompts: every prompt must be a non-empty string"),
        ({"prompts": "a cat"}, "prompts must be a list of prompts (grid rows)"),
        (
            {"prompts": PROMPTS * 9, "seeds": 16},
            "this request draws 288 images (18 prompts x 16 seeds); this server draws at most 256 "
            "per request (--max-images): ask for fewer prompts or seeds",
        ),
    ],
)
def test_bad_prompts_are_refused_in_one_line(text_app_url, settings, message):
    with pytest.raises(AppRequestError) as caught:
        AppClient(text_app_url).start(**settings)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_prompts_to_a_class_model_are_refused_in_one_line(app_url):
    with pytest.raises(AppRequestError, match="class-conditional, it reads no text"):
        AppClient(app_url).start(prompts=PROMPTS)
