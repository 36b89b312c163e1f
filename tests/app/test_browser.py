"""The page in a real headless Chromium (Debian's `chromium`): it loads, a click on Generate shows
progress, and the screenshot holds the grid's pixels; on a text-to-image run it draws the
prompts of its text box. Skipped where Chromium is absent."""

import io

import numpy as np
import pytest
from PIL import Image

from speed.app.browser import find_chromium, generate_in_browser
from speed.app.client import AppClient

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
)


def test_a_generation_in_the_browser_shows_the_grid(app_url, tmp_path):
    shot = tmp_path / "app.png"
    settings = {"classes": [2, 5], "seeds": 2, "num_steps": 3, "seed": 11}
    seen = generate_in_browser(f"{app_url}/", shot, settings, width=1000, height=700)
    assert seen["message"] == "done"
    assert any(text.startswith("sampling: step ") for text in seen["progress"])

    page = np.asarray(Image.open(shot).convert("RGB"))
    assert page.shape[1] == 1000
    client = AppClient(app_url)
    for name in ("grid", "strip"):
        picture = np.asarray(Image.open(io.BytesIO(client.png(seen["job"], name))).convert("RGB"))
        x, y, w, h = (round(v) for v in seen["boxes"][name])
        assert (h, w) == picture.shape[:2]
        assert np.array_equal(page[y : y + h, x : x + w], picture)  # the picture, pixel for pixel
    assert picture.shape[0] == 2 * 3 * 30 + 6  # strip: 2 rows of 28 px tiles (+2 px), 3x enlarged


def test_a_text_run_shows_the_prompt_box_and_draws_its_prompts(text_app_url, tmp_path):
    """On a text-to-image run the page sends the prompts of its text box (not classes, which
    the run refuses): the grid it draws is the API's grid for the same prompts."""
    prompts = ["a cat left of a zebra", "a dog left of a horse"]
    settings = {"prompts": prompts, "seeds": 2, "num_steps": 3, "seed": 11}
    seen = generate_in_browser(f"{text_app_url}/", tmp_path / "app.png", settings)
    assert seen["message"] == "done"
    client = AppClient(text_app_url)
    shown = np.asarray(Image.open(io.BytesIO(client.png(seen["job"], "grid"))))
    assert np.array_equal(shown, client.generate(**settings)["grid"])
