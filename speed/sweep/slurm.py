"""SLURM jobs for sweep runs: one sbatch job per run, torchrun on every node of it.

The job script is rendered by submitit (`_make_sbatch_string`, what its `SlurmExecutor` and
Hydra's `hydra-submitit-launcher` submit with), so the `#SBATCH` flags follow their names; the
command it runs is plain text, so the script shows exactly what each node starts:

    export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun ... torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=$MASTER_ADDR:29500 --rdzv_id=$SLURM_JOB_ID main.py -c ... -p train ...

`srun` starts one task per node (`--ntasks-per-node=1`), each a torchrun that starts
`gpus_per_node` processes and meets the others at the first node. SLURM sends SIGTERM
`signal_delay_s` seconds before the time limit, on which training checkpoints and exits; the next
sweep command resumes it.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from speed.config import ConfigError

MASTER_ADDR_LINE = 'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'


@dataclasses.dataclass
class SlurmSettings:
    """The resources of each run's job (the `slurm:` config node; names as in
    hydra-submitit-launcher's SlurmQueueConf)."""

    nodes: int = 1  # nodes per run; torchrun starts gpus_per_node processes on each
    gpus_per_node: int = 8  # GPUs (= processes) per node; 0 = one CPU process per node
    partition: str | None = None  # SLURM partition
    timeout_min: int = 4320  # wall-clock limit per job, minutes
    cpus_per_task: int | None = None  # CPUs per node (one task per node runs torchrun)
    mem_gb: int | None = None  # memory per node, GB
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None  # nodes to avoid
    comment: str | None = None
    setup: list[str] = dataclasses.field(default_factory=list)  # shell lines before srun
    additional_parameters: dict[str, Any] = dataclasses.field(default_factory=dict)  # #SBATCH
    port: int = 29500  # torchrun rendezvous port on the first node
    signal_delay_s: int = 120  # SIGTERM this long before the time limit (training checkpoints)
    submit: bool = True  # false: write each run's job script without submitting it

    def __post_init__(self):
        for name, low in (("nodes", 1), ("gpus_per_node", 0), ("timeout_min", 1), ("port", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"slurm.{name} must be >= {low}, got {getattr(self, name)}")

    @property
    def procs_per_node(self) -> int:
        return max(1, self.gpus_per_node)


def torchrun_command(
    settings: SlurmSettings, script: Path, config: Path, phase: str, words: list[str]
) -> str:
    """The shell command each node runs: torchrun over `settings.nodes` nodes, then
    `script -c config -p phase words...` (`$MASTER_ADDR` and `$SLURM_JOB_ID` from the job)."""
    rendezvous = [
        f"--nnodes={settings.nodes}",
        f"--nproc_per_node={settings.procs_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=$MASTER_ADDR:{settings.port}",
        "--rdzv_id=$SLURM_JOB_ID",
    ]
    program = [str(script), "-c", str(config), "-p", phase, *words]
    return " ".join([shlex.quote(_torchrun()), *rendezvous, *map(shlex.quote, program)])


def sbatch_script(settings: SlurmSettings, command: str, folder: Path, job_name: str) -> str:
    """The sbatch file of one job (nothing is submitted); logs go to `folder/%j_%t_log.*`."""
    from submitit.slurm.slurm import _make_sbatch_string

    extra = {"chdir": os.getcwd(), "signal": f"TERM@{settings.signal_delay_s}"}
    return _make_sbatch_string(
        command=command,
        folder=folder,
        job_name=job_name,
        partition=settings.partition,
        time=settings.timeout_min,
        nodes=settings.nodes,
        ntasks_per_node=1,
        gpus_per_node=settings.gpus_per_node or None,
        cpus_per_task=settings.cpus_per_task,
        mem=None if settings.mem_gb is None else f"{settings.mem_gb}GB",
        account=settings.account,
        qos=settings.qos,
        constraint=settings.constraint,
        exclude=settings.exclude,
        comment=settings.comment,
        setup=[*settings.setup, MASTER_ADDR_LINE],
        additional_parameters={**extra, **settings.additional_parameters},
        wckey=None,
    )


def submit_sbatch(path: Path) -> str:
    """Submit a job script with sbatch; returns the job id."""
    from submitit import SlurmExecutor

    if shutil.which("sbatch") is None:
        raise ConfigError(
            "launcher=slurm: no sbatch on this machine; run on the cluster's login node, or set "
            "slurm.submit=false to only write the job scripts"
        )
    done = subprocess.run(["sbatch", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise ConfigError(f"sbatch refused {path}: {reason}")
    return SlurmExecutor._get_job_id_from_submission_command(done.stdout)


def job_is_active(job_id: str) -> bool:
    """Whether SLURM still lists the job (pending or running); False without squeue."""
    if shutil.which("squeue") is None:
        return False
    done = subprocess.run(
        ["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and bool(done.stdout.strip())


def _torchrun() -> str:
    """The torchrun beside this Python (a virtual environment's), else the one on PATH."""
    beside = Path(sys.executable).with_name("torchrun")
    return str(beside) if beside.is_file() else "torchrun"
