"""Fully sharded data parallel training with PyTorch's `fully_shard` (FSDP2).

Each block the backbone names (`shard_units()`: a DiT block, a UNet ResBlock or attention block)
becomes one unit, the rest of the model the root unit. A unit's parameters are split along their
first dimension over the ranks (DTensors, `Shard(0)`); the forward and backward passes all-gather
one unit at a time and reduce-scatter its gradients, so every rank keeps 1/W of the weights, the
gradients and the optimizer state (Zhao et al. 2023, "PyTorch FSDP"; the `fully_shard` docs at
https://pytorch.org/docs/stable/distributed.fsdp.fully_shard.html).

With a `param_dtype` (bf16) the all-gathered copies used for compute are cast to it while the
sharded float32 parameters stay the optimizer's master weights, and gradients are reduced in
float32. An EMA is sharded exactly like its model, so it is updated on the local shards.

Without a process group (one process) nothing is sharded: the functions here leave the model as
it is, and the checkpoint helpers read and write plain tensors, so a run saved on N ranks loads on
one and the other way round (torch.distributed.checkpoint reshards on load).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from speed.errors import DataError
from speed.utils import safe_dcp
from speed.utils.distributed import raise_on_every_rank


def shard(model: nn.Module, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Shard `model` in place over the default process group: one unit per block of
    `model.shard_units()` (a module without that method is one unit), then the root.
    `param_dtype`: compute dtype of the gathered parameters (None = their own, float32);
    gradients are reduced in float32. A no-op in one process. Returns `model`."""
    if not dist.is_initialized():
        return model
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for unit in getattr(model, "shard_units", list)():
        fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


@torch.no_grad()
def broadcast_from_rank0(model: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (ranks seed differently, and each keeps
    only its shard of what it holds when sharded; DDP broadcasts the same way). A no-op in one
    process."""
    if dist.is_initialized():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; a plain tensor unchanged."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes this rank holds for `tensors` (its shards of DTensors)."""
    return sum(local(t).numel() * local(t).element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of this rank's optimizer state (AdamW: two moments per parameter shard and a step
    count); 0 before the first step creates it."""
    return local_bytes(
        v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)
    )


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a DTensor (a collective: every rank calls it); a tensor unchanged."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@contextlib.contextmanager
def no_sync(model: nn.Module) -> Iterator[None]:
    """Accumulate gradients without reducing them (the micro-batches before the last one) in a
    DDP or sharded model, compiled or not."""
    model = getattr(model, "_orig_mod", model)  # under torch.compile's wrapper
    if is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with model.no_sync():
            yield


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The consolidated state dict on the CPU, with the model's own keys (a collective when
    sharded: rank 0 receives it, the other ranks an empty dict)."""
    if not is_sharded(model):
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def save_sharded(
    folder: str | Path,
    model,
    optimizer,
    emas: Iterable[tuple[str, nn.Module]],
    companions: Mapping[str, nn.Module] | None = None,
):
    """Write model, optimizer state and EMAs (`emas`: (name, EMA) pairs) to `folder` with
    torch.distributed.checkpoint: each rank writes its shards, rank 0 the metadata. A
    collective. `companions`: modules trained beside the model by the same optimizer (REPA's
    projector), each saved under its name. The optimizer state is keyed by parameter name, so
    it reshards on load."""
    companions = dict(companions or {})
    state = {"model": get_model_state_dict(model)}
    state.update({name: get_model_state_dict(module) for name, module in companions.items()})
    state["opt"] = get_optimizer_state_dict(_optimized(model, companions), optimizer)
    state["emas"] = {name: get_model_state_dict(ema) for name, ema in emas}
    with _one_process_is_intended():
        dcp.save(state, checkpoint_id=str(folder))


def load_sharded(
    folder: str | Path,
    model,
    optimizer,
    emas: Iterable[tuple[str, nn.Module]],
    trust: bool = False,
    companions: Mapping[str, nn.Module] | None = None,
):
    """Read what `save_sharded` wrote into this run's (differently sharded, or unsharded)
    objects. `emas`: (saved name, EMA to fill) pairs; several EMAs may read one saved EMA;
    `companions` as saved. Nothing in the folder goes to the full unpickler unless `trust` (see
    `speed.utils.safe_dcp`). A collective; a DataError naming the folder, on every rank, when
    its metadata or a shard cannot be read."""
    problem, metadata = None, None
    try:
        metadata = safe_dcp.read_metadata(folder, trust)
    except DataError as error:
        problem = error
    raise_on_every_rank(problem)
    # The templates: their shapes and shardings say what each rank reads. Making the
    # optimizer's template creates its state with a zero-lr step, overwritten here.
    companions = dict(companions or {})
    optimized = _optimized(model, companions)
    modules = {"model": model, **companions}
    state = {name: get_model_state_dict(module) for name, module in modules.items()}
    state["opt"] = get_optimizer_state_dict(optimized, optimizer)
    read_into(folder, metadata, state, safe_dcp.SafeLoadPlanner(trust))
    for name, module in modules.items():
        set_model_state_dict(module, state[name])
    set_optimizer_state_dict(optimized, optimizer, state["opt"])
    for name, ema in emas:
        ema_state = {"emas": {name: get_model_state_dict(ema)}}
        partial = safe_dcp.SafeLoadPlanner(trust, allow_partial_load=True)
        read_into(folder, metadata, ema_state, partial)
        set_model_state_dict(ema, ema_state["emas"][name])


def _optimized(model: nn.Module, companions: Mapping[str, nn.Module]) -> nn.Module:
    """The module whose parameters the optimizer holds: the model alone (its parameter names
    key the optimizer state), or the model beside its companions (names `model.*`, `<name>.*`)."""
    return nn.ModuleDict({"model": model, **companions}) if companions else model


def read_into(folder, metadata, state: dict, planner) -> None:
    """dcp.load `state` from `folder`, whose `metadata` was read already. A shard that cannot be
    read (truncated, garbage, missing) is one DataError line on every rank: DCP gathers each
    rank's failure and raises them on all ranks."""
    try:
        with _one_process_is_intended():
            dcp.load(state, storage_reader=safe_dcp.SafeReader(folder, metadata), planner=planner)
    except CheckpointException as error:
        rank, (cause, _) = next(iter(error.failures.items()))
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        first = lines[0].split(". ")[0][:120] if lines else ""
        reason = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
        raise DataError(
            f"sharded checkpoint {folder} cannot be read (rank {rank}: {reason})"
        ) from None


@contextlib.contextmanager
def _one_process_is_intended() -> Iterator[None]:
    """Without a process group DCP warns that it assumes one process: that is the plan here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
