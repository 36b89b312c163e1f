"""Process-group helpers that also work with no process group (plain `python main.py`).

Under torchrun every process reads RANK / LOCAL_RANK / WORLD_SIZE from the environment; the device
is always the *local* rank's GPU (DiT's reference code used the global rank, which breaks on the
second node). CPU runs use gloo, CUDA runs nccl.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, rank on its node, number of processes, device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group if launched by torchrun; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (no-op without a process group); returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (a one-element list without a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def raise_on_every_rank(error: Exception | None) -> None:
    """Collective: when any rank holds an `error`, raise the first such rank's on every rank (as
    an exception of its type with its message), so that all ranks take the same branch; nothing
    when none does. Without a process group: raise `error` if given."""
    errors = all_gather_objects(None if error is None else (type(error), str(error)))
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        kind, message = first
        raise kind(message)


def all_gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's rows of each tensor, concatenated in rank order (the tensors unchanged
    without a process group). The tensors of one rank share their first dimension; ranks may
    hold different numbers of rows: sizes are gathered first, then padded tensors, then trimmed.
    """
    if not dist.is_initialized():
        return tensors
    rows = tensors[0].shape[0]
    sizes = [int(n) for n in all_gather_objects(rows)]
    longest = max(sizes)
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[:rows] = tensor
        parts = [torch.zeros_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:n] for part, n in zip(parts, sizes)]))
    return tuple(gathered)


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only."""
    if get_rank() == 0:
        print(*args, **kwargs, flush=True)


def leave_process_group() -> None:
    """Every rank waits for the others, then the process group is destroyed (no-op without one).

    Call it when a torchrun entry point has finished its work. A process that exits with its gloo
    group alive can abort at interpreter shutdown ("terminate called without an active
    exception", SIGABRT), failing a run that completed: pytorch/pytorch#190489. Not called on an
    error: the other ranks may never reach the barrier; torchrun ends them instead.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
