"""speed/study/work.py and scoring.py: run claims between workers, a restarted study finishing
what it began, a stopped run left unscored, the study's own domain classifier, and the held-out
loss-per-region probe on a model whose output is known (zero)."""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from speed.config import load_config
from speed.diffusion.timesteps import loss_by_region
from speed.run import RunDir
from speed.runners.train import train
from speed.study import __main__ as cli
from speed.study import plan, regions, scoring, work
from speed.sweep.state import read_record, record_sweep


@pytest.fixture
def unet(tmp_path, small_speed_study):
    study = small_speed_study(tmp_path)
    sweep = plan.study_sweep(study)
    return study, sweep, plan.study_runs(study, sweep)


def test_a_restarted_study_first_finishes_the_runs_it_began(unet):
    """Every worker first tries the runs with a checkpoint, whichever shard they fell in, then its
    own shard of the rest."""
    study, sweep, runs = unet
    todo, _ = plan.pending(study, runs, {})
    begun = [todo[4], todo[1]]
    for run in begun:
        checkpoints = RunDir(run.sweep_run.run_dir(sweep.sweep_dir)).checkpoints
        checkpoints.mkdir(parents=True)
        (checkpoints / "0000100.pt").write_bytes(b"")
    (RunDir(todo[0].sweep_run.run_dir(sweep.sweep_dir)).checkpoints).mkdir(parents=True)
    rest = [r for r in todo if r not in begun]
    for index in (0, 1):
        share = work.worker_share(todo, sweep, (index, 2))
        assert share[:2] == [todo[1], todo[4]]  # study order kept
        assert share[2:] == rest[index::2]
    assert work.worker_share(todo[:2], sweep, (1, 2)) == [todo[1], todo[0]]  # shard empty


def test_a_run_stopped_before_its_last_step_is_not_scored(unet, monkeypatch):
    """SIGTERM makes train() save and return early: the run must stay unrecorded and pending."""
    study, sweep, runs = unet
    run = runs[("baseline", (("optimizer.lr", 0.002),), 0)]
    record_sweep(dataclasses.replace(sweep, runs=(run.sweep_run,)), ["new"])
    monkeypatch.setattr(work, "train", lambda cfg: None)  # stopped before any checkpoint
    with pytest.raises(work.StudyInterrupted, match="stopped before step 300"):
        work.do_run(study, run, sweep, scorer=None, probe=False)
    (entry,) = read_record(sweep.sweep_dir)["runs"]
    assert entry["status"]["train"] == "pending"


def test_a_scorer_uses_the_studys_domain_classifier_unless_told_otherwise(unet, monkeypatch):
    """Every command that scores study models (the study, the hand-offs) must use the network
    the study file names, never a classifier trained afresh on the machine at hand."""
    study, sweep, _ = unet
    asked = []

    def ensure(path):
        asked.append(path)
        raise StopIteration  # the path is all this test needs

    monkeypatch.setattr(scoring.domain_classifier, "ensure_domain_classifier", ensure)
    other = dataclasses.replace(study.score, extractors={"domain": "other.pt"})
    for s in (study, dataclasses.replace(study, score=other)):
        with pytest.raises(StopIteration):
            scoring.Scorer(s, sweep).extractor("domain")
    assert asked == ["benchmarks/assets/domain_classifier.pt", "other.pt"]
    assert os.path.isfile(asked[0])


def test_a_run_is_claimed_by_one_live_process(tmp_path):
    assert work.claim(tmp_path) and work.claim(tmp_path)  # its own claim again
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        holder = {"host": socket.gethostname(), "pid": other.pid}
        (tmp_path / work.CLAIM_FILE).write_text(json.dumps(holder))
        assert not work.claim(tmp_path)  # a live worker holds it
    finally:
        other.kill()
        other.wait()
    assert work.claim(tmp_path)  # its holder died: taken over
    assert json.loads((tmp_path / work.CLAIM_FILE).read_text())["pid"] == os.getpid()
    work.release(tmp_path)
    assert not (tmp_path / work.CLAIM_FILE).exists()


def test_region_losses_of_a_zero_output_model_are_the_noise_power(
    tmp_path, tiny_overrides, tiny_dit, dit_config
):
    """With lr 0 the DiT keeps its adaLN-Zero init, whose output is exactly 0: the eps-MSE of each
    region is then the mean squared noise of the images drawn into it."""
    words = [*tiny_overrides(tmp_path, steps=1), *tiny_dit, "optimizer.lr=0.0", "sample_every=0"]
    train(load_config(dit_config, "train", words))
    num_images = 20
    losses = regions.region_losses(dit_config, words, num_images, seed=7)

    generator = torch.Generator().manual_seed(7)
    t = torch.arange(num_images) * 1000 // num_images
    t = t[torch.randperm(num_images, generator=generator)]
    noise = torch.randn(num_images, 1, 28, 28, generator=generator)
    expected = loss_by_region(t, noise.pow(2).mean(dim=(1, 2, 3)))
    assert list(losses) == list(expected) and len(losses) == 10
    for key in expected:
        assert losses[key] == pytest.approx(expected[key], rel=1e-5)


def test_a_report_without_finished_runs_says_so(tmp_path, tiny_study, capsys):
    path = tiny_study(tmp_path)
    assert cli.main([str(path), "--report"]) == 1
    assert "no finished runs" in capsys.readouterr().out
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    "shard, message", [("1", "write it as i/n"), ("2/2", "i must lie in [0, n)")]
)
def test_a_bad_shard_is_one_line(tmp_path, tiny_study, shard, message, capsys):
    assert cli.main([str(tiny_study(tmp_path)), "--shard", shard]) == 2
    assert message in capsys.readouterr().err


def test_status_says_where_each_run_stands_and_the_training_left(tmp_path, tiny_study, capsys):
    """The tiny study (2 methods x 2 seeds, 4 steps): one run recorded at 2 steps under a budget
    raised to 4, one trained to step 2 and held by a live worker, one trained to the end, one not
    begun; the training left is priced at the recorded run's s/step."""
    study, sweep, runs, _ = plan.open_study(tiny_study(tmp_path))
    todo, _ = plan.pending(study, runs, {})
    names = [r.name for r in todo]
    recorded = {"name": names[0], "method": todo[0].method, "seed": 0, "steps": 2,
                "sec_per_step": 900.0}  # fmt: skip
    plan.write_record(study.records_dir, recorded)
    for run, step in ((todo[0], 2), (todo[1], 2), (todo[2], 4)):
        checkpoints = RunDir(run.sweep_run.run_dir(sweep.sweep_dir)).checkpoints
        checkpoints.mkdir(parents=True)
        (checkpoints / f"{step:07d}.pt").write_bytes(b"")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claim = todo[1].sweep_run.run_dir(sweep.sweep_dir) / work.CLAIM_FILE
        claim.write_text(json.dumps({"host": socket.gethostname(), "pid": worker.pid}))
        assert cli.main([str(study.path), "--status"]) == 0
    finally:
        worker.kill()
        worker.wait()
    assert capsys.readouterr().out.splitlines() == [
        f"{names[0]}: recorded at 2, trained to 2 of 4",
        f"{names[1]}: trained to 2 of 4 (pid {worker.pid} on {socket.gethostname()})",
        f"{names[2]}: trained to 4 of 4, to score",
        f"{names[3]}: not begun",
        "0 of 4 runs recorded, 1 more short of the raised budget",
        # lr1e-3: 2 steps left (names[0]) at 900 s/step; lr2e-3 (names[1], [3]) never recorded
        "training left: about 0.5 h on one worker at the recorded runs' s/step, else "
        "timing.json's (scoring not counted); no recorded run yet of lr2e-3",
    ]
