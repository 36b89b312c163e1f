"""The page's endpoints through the app's own client, on a tiny trained run: its options, a
generation equal to the `sample` phase's pictures, progress, downloads, and refusals."""

import threading
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from speed.app.__main__ import main as app_main
from speed.app.client import AppClient, AppRequestError
from speed.app.server import Jobs
from speed.app.studio import RunStudio
from speed.config import load_config
from speed.errors import MissingFileError
from speed.runners.sample import sample


def test_options_list_the_run(app_url, tiny_run):
    options = AppClient(app_url).options()
    assert options["checkpoints"] == ["0000001", "0000002"]
    assert options["classes"][:3] == ["bear", "bird", "cat"] and len(options["classes"]) == 10
    assert "ddim" in options["samplers"] and options["max_steps"] == 1000
    d = options["defaults"]
    assert (d["checkpoint"], d["classes"], d["sampler"], d["num_steps"]) == (
        "0000002",
        [0, 3],
        "ddim",
        3,
    )
    assert (d["guidance_scale"], d["eta"], d["seeds"]) == (2.0, 1.0, 3)


def test_a_generation_equals_the_sample_phase(app_url, tiny_run, demo_config):
    run, overrides = tiny_run
    settings = {"classes": [1, 4], "seeds": 2, "num_steps": 4, "seed": 5, "eta": 0.0}
    settings |= {"checkpoint": "0000001", "guidance_scale": 3.0, "sampler": "ddim"}
    result = AppClient(app_url).generate(**settings)

    phase = ["sample_classes=[1,4]", "num_sample_seeds=2", "num_steps=4", "seed=5", "eta=0.0"]
    phase += [f"ckpt_path={run}/train/checkpoints/0000001.pt", "guidance_scale=3.0"]
    phase += ["denoise_strip=true", "sampler=ddim"]
    grid_path = sample(load_config(demo_config, "sample", overrides + phase))
    expected_grid = np.asarray(Image.open(grid_path))
    expected_strip = np.asarray(Image.open(grid_path.with_name("0000001-denoising.png")))
    assert np.array_equal(result["grid"], expected_grid)
    assert np.array_equal(result["strip"], expected_strip)

    done = [s["done"] for s in result["statuses"]]
    assert all(s["total"] == 8 for s in result["statuses"])  # 4 steps for the grid, 4 the strip
    assert done == sorted(done) and done[-1] == 8 and result["statuses"][-1]["state"] == "done"


def test_the_download_is_an_attachment_named_after_the_settings(app_url):
    client = AppClient(app_url)
    job = client.start(num_steps=2, seeds=1, classes=[0], sampler="ddim", seed=7)
    client.wait(job)
    with urllib.request.urlopen(f"{app_url}/api/jobs/{job}/strip.png?download=1") as reply:
        assert reply.headers["Content-Type"] == "image/png"
        disposition = reply.headers["Content-Disposition"]
        assert disposition == 'attachment; filename="0000002-ddim2-seed7-strip.png"'
        assert reply.read() == client.png(job, "strip")


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"num_steps": 0}, "num_steps must lie in 1..1000"),
        ({"classes": [12]}, "outside 0..9"),
        ({"sampler": "ddimm"}, "did you mean 'ddim'"),
        ({"eta": -1}, "must be >= 0"),
        ({"checkpoint": "0000009"}, "no checkpoint '0000009'"),
        ({"seeds": 99}, "seeds must lie in 1..16"),
        ({"seed": "abc"}, "seed must be an integer"),
        ({"colour": 1}, "unknown setting 'colour'"),
    ],
)
def test_bad_settings_are_refused_in_one_line(app_url, settings, message):
    with pytest.raises(AppRequestError, match=message) as caught:
        AppClient(app_url).start(**settings)
    assert "\n" not in str(caught.value)


def test_a_folder_without_checkpoints_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(MissingFileError, match="holds no checkpoints"):
        RunStudio(tmp_path)
    assert app_main([str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "holds no checkpoints" in err


class BlockingStudio:
    """A stand-in studio whose generation waits for `release` (or fails with `fail`)."""

    def __init__(self, fail=None):
        self.release, self.fail = threading.Event(), fail

    def prepare(self, request):
        return SimpleNamespace(ckpt_path="x/0000001.pt", sampler="ddim", num_steps=2, seed=0), None

    def generate(self, request, progress):
        self.release.wait(10)
        if self.fail:
            raise self.fail
        return {"grid": b"png"}


def test_one_generation_at_a_time_and_errors_reach_the_page():
    studio = BlockingStudio()
    jobs = Jobs(studio)
    first = jobs.start({})
    with pytest.raises(RuntimeError, match="a generation is running"):
        jobs.start({})
    studio.release.set()
    for _ in range(100):
        if first.state == "done":
            break
        threading.Event().wait(0.05)
    assert first.state == "done" and first.pictures == {"grid": b"png"}

    failing = BlockingStudio(fail=MissingFileError("the checkpoint vanished"))
    failing.release.set()
    job = Jobs(failing).start({})
    for _ in range(100):
        if job.state != "running":
            break
        threading.Event().wait(0.05)
    assert (job.state, job.error) == ("error", "the checkpoint vanished")
