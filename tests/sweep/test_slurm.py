"""launcher=slurm: the job script of each run (rendered without submitting), and submission."""

import dataclasses
import os
import stat
from pathlib import Path

import pytest
import yaml

from speed.config import ConfigError, instantiate, load_config
from speed.sweep.slurm import SlurmSettings, sbatch_script, torchrun_command

FASTER = str(Path(__file__).resolve().parents[2] / "configs/image/animals/faster.yaml")
TORCHRUN_2X8 = (
    "torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d "
    "--rdzv_endpoint=$MASTER_ADDR:29500 --rdzv_id=$SLURM_JOB_ID"
)


def test_job_script_of_two_nodes_with_eight_gpus(tmp_path):
    settings = SlurmSettings(
        nodes=2,
        gpus_per_node=8,
        partition="gpu",
        timeout_min=60,
        mem_gb=64,
        setup=["module load x"],
    )
    words = ["diffusion.k=1", "experiment_dir=runs/a/sweep/diffusion.k=1,diffusion.lam=0.6"]
    command = torchrun_command(settings, Path("/repo/main.py"), Path("c.yaml"), "train", words)
    script = sbatch_script(settings, command, tmp_path / "slurm", "train:k1")
    lines = script.splitlines()
    for flag in (
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--partition=gpu",
        "--time=60",
        "--mem=64GB",
        "--job-name=train:k1",
        "--signal=TERM@120",
        f"--chdir={os.getcwd()}",
    ):
        assert f"#SBATCH {flag}" in lines
    srun = next(line for line in lines if line.startswith("srun "))
    assert TORCHRUN_2X8 in srun
    assert srun.endswith(
        "/repo/main.py -c c.yaml -p train diffusion.k=1 "
        "experiment_dir=runs/a/sweep/diffusion.k=1,diffusion.lam=0.6"
    )
    master = lines.index(
        'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    )
    assert lines.index("module load x") < master < lines.index(srun)


def test_settings_use_the_names_of_hydra_submitit_launcher():
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    ours = {field.name for field in dataclasses.fields(SlurmSettings)}
    theirs = {field.name for field in dataclasses.fields(SlurmQueueConf)}
    assert ours - theirs == {"port", "submit"}  # torchrun's rendezvous port; write-only mode


def test_one_cpu_process_per_node_without_gpus(tmp_path):
    settings = SlurmSettings(nodes=1, gpus_per_node=0)
    command = torchrun_command(settings, Path("main.py"), Path("c.yaml"), "inference", [])
    script = sbatch_script(settings, command, tmp_path, "x")
    assert "--nproc_per_node=1 " in command and "--gpus-per-node" not in script


@pytest.mark.parametrize("word, message", [
    ("slurm.nodes=0", "slurm.nodes must be >= 1, got 0"),
    ("slurm.gpus_per_nodes=8", "unknown config key 'slurm.gpus_per_nodes' (command line); "
                               "did you mean 'slurm.gpus_per_node'?"),
    ("slurm.nodes=two", "config key 'slurm.nodes' expects int, got 'two'"),
    ("launcher=slurmm", "config key 'launcher' expects one of local|slurm"),
])  # fmt: skip
def test_settings_are_checked(word, message):
    with pytest.raises(ConfigError) as info:
        instantiate(load_config(FASTER, "train", [word]).slurm)
    assert message in str(info.value)


def _sweep(tmp_path, *extra) -> list[str]:
    return [
        "-c", FASTER, "-p", "train", "-m", "diffusion.k=1,5", "launcher=slurm",
        "slurm.nodes=2", "max_training_steps=2400", f"experiment_dir={tmp_path}", *extra,
    ]  # fmt: skip


def test_slurm_sweep_writes_a_job_script_per_run_without_submitting(tmp_path, cli):
    assert cli(_sweep(tmp_path, "slurm.submit=false")) == 0
    for k in (1, 5):
        run = tmp_path / f"sweep/diffusion.k={k}"
        script = (run / "slurm/train.sbatch").read_text()
        assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=8" in script
        assert TORCHRUN_2X8 in script
        assert (
            f" -p train launcher=slurm slurm.nodes=2 max_training_steps=2400 slurm.submit=false "
            f"diffusion.k={k} " in script
        )
        assert script.rstrip().endswith(f"resume=true experiment_dir={run}")
        assert not (run / "train").exists()  # nothing ran here


def _fake_slurm(bin_dir: Path, squeue_state: str) -> Path:
    """sbatch that logs its argument and answers like SLURM; squeue printing `squeue_state`."""
    bin_dir.mkdir()
    log = bin_dir / "submitted.log"
    scripts = {
        "sbatch": f'echo "$1" >> {log}\necho "Submitted batch job 4242"\n',
        "squeue": f'echo "{squeue_state}"\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return log


def test_submitted_jobs_are_recorded_and_not_submitted_twice(tmp_path, cli, monkeypatch, capsys):
    log = _fake_slurm(tmp_path / "bin", squeue_state="RUNNING")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert cli(_sweep(tmp_path / "exp")) == 0
    assert len(log.read_text().splitlines()) == 2
    record = yaml.safe_load((tmp_path / "exp/sweep/sweep.yaml").read_text())
    assert [run["status"] for run in record["runs"]] == [{"train": "submitted"}] * 2
    assert [run["jobs"] for run in record["runs"]] == [{"train": "4242"}] * 2
    capsys.readouterr()
    assert cli(_sweep(tmp_path / "exp")) == 0
    assert capsys.readouterr().out.count("job 4242 is still queued or running, skipped") == 2
    assert len(log.read_text().splitlines()) == 2

    final = tmp_path / "exp/sweep/diffusion.k=1/train/checkpoints/0002400.pt"  # the job finished
    final.parent.mkdir(parents=True)
    final.touch()
    assert cli(_sweep(tmp_path / "exp")) == 0
    assert "[1/2] diffusion.k=1: finished, skipped" in capsys.readouterr().out
    record = yaml.safe_load((tmp_path / "exp/sweep/sweep.yaml").read_text())
    assert [run["status"] for run in record["runs"]] == [{"train": "done"}, {"train": "submitted"}]
