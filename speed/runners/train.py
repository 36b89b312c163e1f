"""The `train` phase: DDP or FSDP training with EMA, mixed precision, accumulation and exact
resume.

Shaped like EDM's training loop: objects are built from the config, then one flat loop whose
sections are headed by comments. Everything a resumed run needs to continue as if never stopped
(weights, EMA, optimizer, scaler, lr schedule, timestep-sampler state, data position, every rank's
RNG state) goes into each checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from speed.config import ConfigError, save_config
from speed.data import ResumableSampler, build_dataloader
from speed.data.captions import draw_caption_indices
from speed.diffusion.timesteps import loss_by_region
from speed.errors import Interrupted
from speed.generation import TrainingGridSampler
from speed.models import load_pretrained
from speed.run import (
    RunDir,
    TrainState,
    checkpoint_step,
    claim_train_dir,
    latest_checkpoint,
    load_newest_good,
    locked,
    prune_checkpoints,
    resume_candidates,
)
from speed.run.identity import experiment_record
from speed.run.nonfinite import NonFiniteGuard
from speed.run.sharded import ShardedTrainState, prune_shards
from speed.runners.build import (
    DataSpec,
    build_adapter,
    build_alignment,
    build_autoencoder,
    build_control,
    build_dataset,
    build_diffusion,
    build_model,
    build_optimizer,
    build_text_encoder,
    check_captions,
    data_spec,
)
from speed.utils import fsdp
from speed.utils.atomic import atomic_write
from speed.utils.distributed import all_gather_objects, all_reduce_sum, barrier, init_distributed
from speed.utils.ema import make_ema, update_ema
from speed.utils.images import save_png
from speed.utils.logging import RunLogger, format_duration
from speed.utils.lr_schedule import build_lr_scheduler
from speed.utils.precision import autocast_dtype
from speed.utils.seeding import derived_seed, get_rng_state, seed_everything

STEP_NOISE_STREAM = 2  # derived_seed stream of the per-step training randomness
CAPTION_STREAM = 3  # derived_seed stream of the per-step caption draws


def train(cfg: DictConfig, start_step: int = 0) -> Path:
    """Run the train phase described by the resolved config; returns the last checkpoint path.
    The train folder is locked for the run (a second run into it is refused).

    `start_step`: a fresh run (no checkpoint to resume) begins at this optimizer step from its
    initial weights, as if it had trained that far: the step counter, the lr schedule, the
    timestep sampler's and the model's step-dependent stages (MaskDiT's `unmask_at_step`) and the
    per-step randomness all see it. For timing a later stage of training
    (`python -m speed.study STUDY.yaml --time`); 0 is the ordinary start."""
    dist = init_distributed()
    run = RunDir.of(cfg)
    with locked(run.train, enabled=dist.is_main):
        return _train(cfg, dist, run, start_step)


def _train(cfg: DictConfig, dist, run: RunDir, start_step: int = 0) -> Path:
    if cfg.strategy == "fsdp" and cfg.precision == "fp16":
        raise ConfigError("strategy=fsdp trains in fp32 or bf16; set precision=bf16 (or fp32)")
    if cfg.adapter.rank and cfg.ckpt_path:
        raise ConfigError(
            "an adapter run starts from adapter.base, not ckpt_path; unset ckpt_path (resume=true "
            "continues an adapter run)"
        )
    if cfg.control.branch:
        _check_control(cfg)

    # ---- Where to start: a checkpoint to resume, or an empty run folder. ----
    resume_paths = resume_candidates(cfg)
    if start_step and resume_paths:
        raise ConfigError(
            f"train: start_step={start_step} begins a fresh run, but {run.checkpoints} holds "
            "checkpoints to resume; use an empty run folder"
        )
    if start_step < 0 or (start_step and start_step >= cfg.max_training_steps):
        raise ConfigError(
            f"train: start_step={start_step} must lie in [0, max_training_steps="
            f"{cfg.max_training_steps})"
        )
    if not resume_paths and dist.is_main:
        claim_train_dir(run, cfg.overwrite)
    barrier()
    seed_everything(cfg.seed * dist.world_size + dist.rank)
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.backends.cudnn.allow_tf32 = cfg.tf32

    # ---- Objects, then their state (after the objects: restoring sets the RNG states). ----
    init_weights = None if resume_paths else cfg.ckpt_path
    job = _build(cfg, dist, init_weights, trust=cfg.trust_checkpoint)
    if start_step:
        _start_at(job.state, start_step)
    if resume_paths:
        loaded = load_newest_good(
            job.state,
            resume_paths,
            dist.rank,
            world_size=dist.world_size,
            trust=cfg.trust_checkpoint,
        )
        if job.state.step >= cfg.max_training_steps:
            _say(
                dist,
                f"train: nothing to do: {loaded} is at step {job.state.step}, "
                f"max_training_steps={cfg.max_training_steps}; raise it to train further",
            )
            return loaded
        if _out_of_time(cfg, job.state):
            _say(
                dist,
                f"train: nothing to do: {loaded} has trained {job.state.train_seconds:.0f} s, "
                f"max_training_seconds={cfg.max_training_seconds:g}; raise it to train further",
            )
            return loaded
        _say(
            dist,
            f"train: resuming from {loaded} at step {job.state.step} of {cfg.max_training_steps}",
        )
    train_model = _wrap(job.state.model, cfg, dist)

    # ---- Logging and interruption handling, undone however the loop ends. ----
    logger = RunLogger(
        run.logs,
        config=OmegaConf.to_container(cfg),
        wandb_mode=cfg.wandb,
        tensorboard=cfg.tensorboard,
        project=cfg.project,
        name=run.root.name,
    )
    stop_requested = {"flag": False, "signal": None}
    previous_handlers = _install_stop_handlers(stop_requested)
    try:
        if dist.is_main:
            save_config(cfg, run.config_file("train"))
        return _loop(cfg, dist, run, job, train_model, logger, stop_requested)
    finally:
        _restore_handlers(previous_handlers)
        logger.close()


@dataclass
class _Job:
    """The built objects of one training run; `state` holds what a checkpoint saves."""

    state: TrainState
    dataset: Any
    autoencoder: torch.nn.Module
    spec: DataSpec
    text_encoder: torch.nn.Module  # speed.text: captions -> model kwargs (Labels: no text)
    diffusion: Any
    data_sampler: ResumableSampler
    loader: Any
    micro_batch: int  # per process and accumulation step
    control: Any = None  # speed.control.ControlNet: the control image of each training image


def _build(cfg: DictConfig, dist, init_weights: str | None, trust: bool = False) -> _Job:
    """Dataset, autoencoder, model (from `init_weights` if given; with an adapter or a control
    branch, it over its base's weights), EMAs, diffusion, optimizer, schedules and loader; with
    strategy=fsdp the model and EMAs are sharded before the optimizer sees their parameters."""
    device = dist.device
    dataset = build_dataset(cfg)
    if cfg.repa.lam and getattr(dataset, "feature_encoder", None):
        dataset.include_features()  # REPA's targets from the latent cache (a 3rd item)
    autoencoder = build_autoencoder(cfg).to(device)
    _check_latent_cache(dataset, autoencoder)
    spec = data_spec(cfg, dataset, autoencoder)
    text_encoder = build_text_encoder(cfg).to(device)
    check_captions(text_encoder, dataset)
    model = build_model(cfg, spec, text_encoder).to(device)
    if cfg.sample_every and getattr(model, "conditions", ()):
        raise ConfigError(
            f"sample_every: training grids draw class rows, but {type(model).__name__} also "
            f"needs {', '.join(model.conditions)}; set sample_every=0 and draw with -p sample"
        )
    control = build_control(cfg)
    if control is not None and dataset.is_latent:
        raise ConfigError(
            "control: the control images are computed from the training images, and a latent "
            "cache holds none; train the control branch from an image folder"
        )
    adapter = control or build_adapter(cfg)  # what trains over a frozen base, and is saved
    if adapter.enabled:  # the base is loaded on resume too: checkpoints hold the add-on only
        init_weights = adapter.base
    if init_weights:
        load_pretrained(model, init_weights, trust=trust)
    model = adapter.apply(model)
    if cfg.strategy == "fsdp":
        fsdp.broadcast_from_rank0(model)
    diffusion = build_diffusion(cfg)
    alignment = build_alignment(cfg, model, spec, dataset).to(device)
    fsdp.broadcast_from_rank0(alignment)  # outside DDP's wrapper: ranks must start equal
    ema_rates = [float(r) for r in cfg.ema_rates]
    emas = [make_ema(model) for _ in ema_rates]
    if cfg.strategy == "fsdp":
        fsdp.shard(model, param_dtype=autocast_dtype(cfg.precision))
        for ema in emas:
            fsdp.shard(ema)
        alignment.shard(autocast_dtype(cfg.precision))
    optimizer = build_optimizer(cfg, torch.nn.ModuleList([model, alignment]), device, adapter)
    lr_scheduler = build_lr_scheduler(
        optimizer, cfg.lr_schedule, cfg.warmup_steps, cfg.lr_anneal_steps or cfg.max_training_steps
    )
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    micro_batch = _micro_batch_size(cfg, dist.world_size)
    _check_one_step(cfg, len(dataset), micro_batch, dist.world_size)
    data_sampler = ResumableSampler(
        len(dataset), rank=dist.rank, world_size=dist.world_size, shuffle=True, seed=cfg.seed
    )
    loader = build_dataloader(
        dataset,
        micro_batch,
        data_sampler,
        num_workers=cfg.data.get("num_workers", 0),
        pin_memory=cfg.data.get("pin_memory", False),
        seed=cfg.seed,
    )
    state_type = ShardedTrainState if cfg.strategy == "fsdp" else TrainState
    state = state_type(
        model=model,
        emas=emas,
        ema_rates=ema_rates,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        scaler=scaler,
        timestep_sampler=diffusion.timestep_sampler,
        data_spec=spec.to_dict(),
        config=OmegaConf.to_container(cfg),
        experiment=experiment_record(cfg, micro_batch * dist.world_size * cfg.grad_accum),
        resume_changes=tuple(cfg.resume_changes),
        objective=diffusion.family,
        alignment=alignment,
        adapter=adapter,
    )
    return _Job(
        state, dataset, autoencoder, spec, text_encoder, diffusion, data_sampler, loader,
        micro_batch, control,
    )  # fmt: skip


def _start_at(state: TrainState, step: int) -> None:
    """Put a fresh state at optimizer step `step`: the step counter, and the lr schedule's
    position and learning rates (as if it had been stepped `step` times)."""
    state.step = step
    scheduler = state.lr_scheduler
    scheduler.last_epoch = step
    lrs = [base * factor(step) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


def _wrap(model: torch.nn.Module, cfg: DictConfig, dist) -> torch.nn.Module:
    """The module the loop calls: DDP over several processes (FSDP's model is already sharded),
    compiled if asked."""
    if dist.world_size > 1 and cfg.strategy == "ddp":
        device_ids = [dist.local_rank] if dist.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    return torch.compile(model) if cfg.compile else model


def _print_summary(cfg: DictConfig, dist, job: _Job) -> None:
    """The log's first line, printed once the first step has created the optimizer state: run
    size, and the largest bytes any rank holds for weights, optimizer state and EMAs (local
    shards under FSDP; gradients take as much as the weights)."""
    state = job.state
    held = (
        fsdp.local_bytes(state.model.parameters()),
        fsdp.optimizer_state_bytes(state.optimizer),
        sum(fsdp.local_bytes(ema.parameters()) for ema in state.emas),
    )
    per_rank = [max(column) / 2**20 for column in zip(*all_gather_objects(held))]
    if not dist.is_main:
        return
    params = sum(p.numel() for p in state.model.parameters())
    size = f"{params / 1e6:.2f}M params"
    if state.adapter.enabled:
        trained = sum(p.numel() for p in state.adapter.trainable(state.model))
        size += f" ({trained / 1e6:.3f}M in the {state.adapter.kind} adapter)"
    print(
        f"train: {size}, {len(job.dataset)} items, global batch "
        f"{job.micro_batch * dist.world_size * cfg.grad_accum}, "
        f"{dist.world_size} process(es) on {dist.device.type}, {cfg.strategy}; "
        f"per rank MiB: params {per_rank[0]:.3f}, optimizer {per_rank[1]:.3f}, "
        f"ema {per_rank[2]:.3f}; timesteps: {job.diffusion.timestep_sampler.describe()}; "
        f"repa: {state.alignment.describe()}",
        flush=True,
    )


def _save(
    cfg: DictConfig, dist, run: RunDir, state: TrainState, guard: NonFiniteGuard, more=True
) -> Path | None:
    """Checkpoint the state at its step (every rank takes part; rank 0 writes the file and
    prunes; under FSDP every rank also writes its shards). A state holding NaN/inf is not
    written: `guard` stops the run or rolls it back (only when `more` data follows), and None
    is returned."""
    if not guard.finite(state, can_roll_back=more):
        return None
    sharded = isinstance(state, ShardedTrainState)
    if not sharded:  # FSDP ranks hold different shards by design
        _check_ranks_in_sync(state.model)
    rng_states = all_gather_objects(get_rng_state())
    path = run.checkpoint(state.step)
    if sharded:
        state.save(path, rng_states)  # a collective
    if dist.is_main:
        if not sharded:
            state.save(path, rng_states)
        prune_checkpoints(run.checkpoints, cfg.ckpt_keep, cfg.ckpt_keep_every)
        prune_shards(run.checkpoints)
    barrier()
    return path


def _out_of_time(cfg, state: TrainState) -> bool:
    return bool(cfg.max_training_seconds) and state.train_seconds >= cfg.max_training_seconds


def step_is_last(cfg, state: TrainState, device) -> bool:
    """Whether training ends at this step: `max_training_steps` reached, or the training time
    `max_training_seconds` spent (on any rank's clock, so that all ranks stop together)."""
    if state.step >= cfg.max_training_steps:
        return True
    if not cfg.max_training_seconds:
        return False
    return bool(all_reduce_sum(torch.tensor([float(_out_of_time(cfg, state))], device=device))[0])


def _record_time_budget(cfg, run: RunDir, state: TrainState) -> None:
    """Say that training ended on its time budget, at which step (what `phase_state` reads)."""
    record = {
        "step": state.step,
        "max_training_seconds": cfg.max_training_seconds,
        "train_seconds": round(state.train_seconds, 3),
    }
    atomic_write(run.time_budget_record, json.dumps(record) + "\n")


def _loop(cfg, dist, run: RunDir, job: _Job, train_model, logger, stop_requested) -> Path:
    """Train from `job.state` to `max_training_steps` or `max_training_seconds` (or a stop
    request); returns the last checkpoint, written at the final step."""
    device, state, diffusion = dist.device, job.state, job.diffusion
    model, micro_batch = state.model, job.micro_batch
    amp_dtype = autocast_dtype(cfg.precision)
    grids = (
        TrainingGridSampler(
            cfg, job.spec, job.autoencoder, device, job.control, job.dataset, job.text_encoder
        )
        if cfg.sample_every
        else None
    )
    label_drop_prob = model.class_dropout_prob if getattr(model, "has_null_label", False) else 0.0
    # A backbone that trains on random inputs of its own (MaskDiT's and MDT's token masks) draws
    # them per step with the step's generator: `training_inputs(step, n, generator) -> kwargs`.
    masks_tokens = hasattr(model, "training_inputs")

    model.train()
    summary_pending = True
    last_ckpt = latest_checkpoint(run.checkpoints)
    guard = NonFiniteGuard(cfg, dist, run)
    micro_step = 0
    interval = _IntervalStats(device)
    tic = mark = time.perf_counter()
    done = state.step >= cfg.max_training_steps or _out_of_time(cfg, state)
    logger.start_progress(cfg.max_training_steps, state.step)  # closed by logger.close()
    while not done and state.epoch < cfg.epoch:
        job.data_sampler.set_epoch(state.epoch)
        job.data_sampler.set_start(state.batches_in_epoch * micro_batch)
        for x, y, *cached in job.loader:  # a latent cache may hold REPA's targets (3rd item)
            x = x.to(device, non_blocking=True)
            with torch.no_grad():  # REPA's encoder sees the clean image, before encoding
                if cached:
                    targets = cached[0].to(device, non_blocking=True)
                else:
                    targets = state.alignment.targets(x)
                # ControlNet: the control image of each training image, encoded like it.
                control = job.control and job.autoencoder.encode(job.control.maps(x))
                x = x if job.dataset.is_latent else job.autoencoder.encode(x)
            micro_index = micro_step % cfg.grad_accum
            state.batches_in_epoch += 1
            micro_step += 1
            last_micro = micro_step % cfg.grad_accum == 0

            # This micro-batch's share of the step's randomness (timesteps, noise, label dropout).
            if micro_index == 0:
                diffusion.timestep_sampler.set_step(state.step)
                randomness = _StepRandomness.draw(
                    diffusion.timestep_sampler,
                    derived_seed(cfg.seed, STEP_NOISE_STREAM, state.step),
                    micro_batch * dist.world_size * cfg.grad_accum,
                    tuple(x.shape[1:]),
                    label_drop_prob,
                    partial(model.training_inputs, state.step) if masks_tokens else None,
                )
            positions = dist.rank + dist.world_size * (
                micro_index * micro_batch + torch.arange(x.shape[0])
            )
            t, weights, noise, drop, inputs = randomness.take(positions, device)
            global_batch = micro_batch * dist.world_size * cfg.grad_accum
            model_kwargs = _condition(cfg, job, y, state.step, positions, global_batch, device)
            if label_drop_prob:
                model_kwargs["force_drop_ids"] = drop
            model_kwargs.update(inputs)
            if control is not None:
                model_kwargs["control"] = control

            # Forward + backward of one micro-batch (no gradient all-reduce until the last one).
            sync = contextlib.nullcontext() if last_micro or dist.world_size == 1 else None
            amp = torch.autocast(device.type, dtype=amp_dtype, enabled=bool(amp_dtype))
            with sync or fsdp.no_sync(train_model):
                with amp:
                    terms = diffusion.training_losses(
                        train_model, x, t, model_kwargs=model_kwargs, noise=noise, weights=weights
                    )
                    loss = (terms["loss"] + state.alignment.loss(targets)).mean()
                scaled = loss / cfg.grad_accum
                (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
            # Unweighted per-sample losses: loss-by-region logs and the loss-aware samplers.
            unweighted = sum(terms[k] for k in ("mse", "vb") if k in terms).detach().float()
            diffusion.timestep_sampler.update_with_losses(t, unweighted)
            per_sample = terms.get("mse", unweighted).detach().float()
            interval.add(
                loss.detach(), diffusion.original_timesteps(t).cpu(), per_sample.cpu(), x.shape[0]
            )
            if not last_micro:
                continue

            # Optimizer step, skipped on every rank when any rank saw a non-finite loss.
            flags = all_reduce_sum(
                torch.tensor(
                    [float(not torch.isfinite(loss)), float(stop_requested["flag"])], device=device
                )
            )
            if flags[0] > 0:
                state.optimizer.zero_grad(set_to_none=True)
                interval.nonfinite += 1
                if guard.loss(state, nonfinite=True):
                    continue  # rolled back to the newest good checkpoint
            else:
                guard.loss(state, nonfinite=False)
                state.alignment.sync_gradients()
                interval.grad_norm = _optimizer_step(state, cfg.grad_clip)
            state.step += 1
            interval.steps += 1
            now = time.perf_counter()
            state.train_seconds += now - mark  # the step, and the logs and saves after the last
            mark = now
            last_step = step_is_last(cfg, state, device)
            logger.advance()
            if summary_pending:
                _print_summary(cfg, dist, job)
                summary_pending = False

            # Logs, sample grids, checkpoints.
            step = state.step
            if step % cfg.log_every == 0 or last_step:
                elapsed = time.perf_counter() - tic
                stats = interval.summarize(elapsed, num_timesteps=diffusion.original_num_steps)
                stats["lr"] = state.optimizer.param_groups[0]["lr"]
                eta = (cfg.max_training_steps - step) * stats["sec_per_step"]
                if cfg.max_training_seconds:
                    eta = max(0.0, min(eta, cfg.max_training_seconds - state.train_seconds))
                logger.scalars(step, stats, note=f"eta={format_duration(eta)}")
                interval = _IntervalStats(device)
                tic = time.perf_counter()
            if grids is not None and step % cfg.sample_every == 0:
                grid = grids.render(state.emas[0], diffusion)
                if grid is not None:
                    logger.image(step, "samples", grid)
                    save_png(grid, run.training_grid(step))
            if flags[1] > 0:
                last_ckpt = _save(cfg, dist, run, state, guard, more=False)
                logger.scalars(step, {"preempted": 1})
                raise Interrupted(last_ckpt, step, stop_requested["signal"] or signal.SIGTERM)
            if step % cfg.ckpt_every == 0 or last_step:
                saved = _save(cfg, dist, run, state, guard)
                if saved is None:
                    continue  # rolled back to the newest good checkpoint
                last_ckpt = saved
            if last_step:
                if step < cfg.max_training_steps and dist.is_main:
                    _record_time_budget(cfg, run, state)
                done = True
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    if summary_pending:
        _print_summary(cfg, dist, job)
    if last_ckpt is None or checkpoint_step(last_ckpt) != state.step:
        last_ckpt = _save(cfg, dist, run, state, guard, more=False)
    return last_ckpt


def _condition(cfg, job: _Job, y, step: int, positions, size: int, device) -> dict:
    """The model's conditioning kwargs of a micro-batch: the labels y; a dict y (the
    super-resolution pairs' {"low_res": ..., "y": ...}) as it is; or for a captioned dataset
    (y = item indices) one caption per item drawn with the step's caption generator (the same
    draw for sample j of the global batch of `size` however the batch is split), encoded, or
    read from a latent cache that stores this text encoder's embeddings."""
    if isinstance(y, dict):
        return {key: value.to(device, non_blocking=True) for key, value in y.items()}
    if not job.text_encoder.reads_text:
        return {"y": y.to(device, non_blocking=True)}
    generator = torch.Generator().manual_seed(derived_seed(cfg.seed, CAPTION_STREAM, step))
    items = y.tolist()
    captions = [job.dataset.captions(i) for i in items]
    picks = draw_caption_indices([len(c) for c in captions], generator, size, positions)
    made_by = getattr(job.dataset, "caption_encoder", None)
    if made_by is not None and made_by == getattr(job.text_encoder, "identity", None):
        embeddings, mask = job.dataset.caption_embeddings(items, picks)  # cached by -p extract
        return {"y": embeddings.to(device), "mask": mask.to(device)}
    return job.text_encoder.condition([c[k] for c, k in zip(captions, picks)], device)


def _optimizer_step(state: TrainState, grad_clip: float | None) -> float:
    """Unscale, clip, step (through the fp16 scaler if any), advance the lr schedule and EMAs;
    returns the gradient norm before clipping."""
    scaler, optimizer = state.scaler, state.optimizer
    if scaler is not None:
        scaler.unscale_(optimizer)
    max_norm = grad_clip if grad_clip else float("inf")
    grad_norm = fsdp.full_value(
        torch.nn.utils.clip_grad_norm_(list(state.trainable_parameters()), max_norm)
    )
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state.lr_scheduler.step()
    for ema, rate in zip(state.emas, state.ema_rates):
        update_ema(ema, state.model, rate)
    return float(grad_norm)


class _StepRandomness:
    """The random draws of one optimizer step for its whole global batch.

    Drawn from a generator seeded by (seed, step) on every rank; sample j of the global batch
    (rank r, micro-batch m, row i: j = r + W (m b + i)) always gets the same timestep, noise,
    label-dropout draw and backbone inputs (a token mask), so 1 process with batch B, W processes
    with B / W each, and B / A with A accumulation steps all compute the same update, and a
    resumed run redraws the same numbers.
    """

    def __init__(self, t, weights, noise, drop, inputs):
        self.t, self.weights, self.noise, self.drop = t, weights, noise, drop
        self.inputs = inputs

    @classmethod
    def draw(
        cls,
        timestep_sampler,
        seed: int,
        size: int,
        shape: tuple,
        drop_prob: float,
        training_inputs=None,
    ):
        """`training_inputs(n, generator) -> dict` (optional) adds backbone kwargs, drawn after
        the rest: tensors of n rows are split by sample, other values passed to every call."""
        generator = torch.Generator().manual_seed(seed)
        t, weights = timestep_sampler.sample(size, "cpu", generator=generator)
        noise = torch.randn((size, *shape), generator=generator)
        drop = (torch.rand(size, generator=generator) < drop_prob).long()
        inputs = training_inputs(size, generator) if training_inputs is not None else {}
        return cls(t, weights, noise, drop, inputs)

    def take(self, positions: torch.Tensor, device: torch.device):
        """(t, weights, noise, drop, backbone kwargs) of the samples at `positions`."""
        per_sample = (self.t, self.weights, self.noise, self.drop)
        inputs = {
            name: value[positions].to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.inputs.items()
        }
        return (*(v[positions].to(device) for v in per_sample), inputs)


class _IntervalStats:
    """Accumulates losses and timings between two log lines; reduced across ranks on summary."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss_sum = torch.zeros((), device=device)
        self.micro_batches = 0
        self.images = 0
        self.steps = 0
        self.nonfinite = 0
        self.grad_norm = float("nan")
        self.t: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, t: torch.Tensor, per_sample: torch.Tensor, n: int) -> None:
        if torch.isfinite(loss):
            self.loss_sum += loss.float()
            self.micro_batches += 1
        self.images += n
        self.t.append(t)
        self.losses.append(per_sample)

    def summarize(self, elapsed: float, num_timesteps: int) -> dict[str, float]:
        totals = torch.tensor(
            [float(self.loss_sum), self.micro_batches, self.images], device=self.device
        )
        totals = all_reduce_sum(totals)
        gathered = all_gather_objects((torch.cat(self.t), torch.cat(self.losses)))
        t_all = torch.cat([g[0] for g in gathered])
        loss_all = torch.cat([g[1] for g in gathered])
        steps = max(1, self.steps)
        stats = {
            "loss": float(totals[0] / max(1.0, float(totals[1]))),
            "grad_norm": self.grad_norm,
            "images_per_s": float(totals[2]) / elapsed,
            "steps_per_s": steps / elapsed,
            "sec_per_step": elapsed / steps,
            "peak_mem_gb": _peak_memory_gb(self.device),
            "nonfinite_steps": self.nonfinite,
        }
        stats.update(loss_by_region(t_all, loss_all, num_timesteps=num_timesteps))
        return stats


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _micro_batch_size(cfg: DictConfig, world_size: int) -> int:
    """Per-process micro-batch: global_batch_size / (world x grad_accum), else data.batch_size."""
    if cfg.global_batch_size is None:
        return int(cfg.data.batch_size)
    per_step = world_size * cfg.grad_accum
    if cfg.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} is not divisible by "
            f"world_size x grad_accum = {world_size} x {cfg.grad_accum}; change one of them"
        )
    return cfg.global_batch_size // per_step


def _check_one_step(cfg: DictConfig, num_items: int, micro_batch: int, world_size: int) -> None:
    """An epoch must hold at least one optimizer step: batches are full (drop_last), so a dataset
    smaller than one global batch would train nothing and stop at once."""
    global_batch = micro_batch * world_size * cfg.grad_accum
    if num_items < global_batch:
        raise ConfigError(
            f"data: {num_items} items are fewer than one global batch of {global_batch} "
            f"(batch {micro_batch} x {world_size} process(es) x grad_accum {cfg.grad_accum}), "
            "so no step could be taken; lower data.batch_size / global_batch_size or add data"
        )


def _check_control(cfg: DictConfig) -> None:
    """A control branch trains alone over its base, from images (its control images are
    computed from them)."""
    if cfg.adapter.rank:
        raise ConfigError("a control branch trains over a plain base; set adapter.rank=0")
    if cfg.ckpt_path:
        raise ConfigError(
            "a control run starts from control.base, not ckpt_path; unset ckpt_path (resume=true "
            "continues a control run)"
        )


def _check_latent_cache(dataset, autoencoder) -> None:
    """A latent cache must be decoded by the autoencoder that wrote it (sample grids, inference)."""
    if not dataset.is_latent:
        return
    made_by = dataset.metadata.get("autoencoder"), dataset.scale
    if made_by != (autoencoder.name, autoencoder.scale):
        raise ConfigError(
            f"data: the latent cache was written by {made_by[0]} (scale {made_by[1]}) but "
            f"autoencoder is {autoencoder.name} (scale {autoencoder.scale}); set autoencoder to "
            "the one used by -p extract"
        )


def _check_ranks_in_sync(model: torch.nn.Module) -> None:
    """All ranks must hold the same weights (DDP keeps them equal); fail loudly if not."""
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    checksums = all_gather_objects(checksum)
    if len(set(checksums)) > 1:
        raise RuntimeError(f"ranks hold different weights (parameter checksums {checksums})")


def _say(dist, line: str) -> None:
    if dist.is_main:
        print(line, flush=True)


def _install_stop_handlers(stop_requested: dict) -> dict:
    """On SIGTERM/SIGINT (preemption, Ctrl-C) finish the step, checkpoint, raise Interrupted."""

    def handler(signum, frame):
        stop_requested["flag"] = True
        stop_requested["signal"] = signum

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    return previous


def _restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
