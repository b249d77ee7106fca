"""A readable training loop on accelerate, used for unlearning and for fine-tuning.

One optimiser step = ``gradient_accumulation_steps`` micro-batches. Each micro-batch holds one batch
of the primary split (``forget`` when unlearning, ``train`` when fine-tuning), walked in seeded shuffled
passes, plus a batch of every other split the objective reads (e.g. ``retain``), drawn at random with a
seeded generator (each forget batch paired with a random retain batch). Then: clip the gradient,
apply the parameter mask if any (the one place masks act), optimiser and scheduler step.

Several processes (``accelerate launch --num_processes N`` or ``torchrun``): every process walks the same
seeded stream of micro-batches and takes every N-th one (process r the micro-batches r, r+N, …), so an
optimiser step sees batch × accumulation × N distinct examples, the same ones in the same order as one process
with N times the accumulation; accelerate's DDP wrapper averages the gradients, and the logged values are
averaged over processes too. Each process draws the whole stream and keeps its share (collating the others'
small token batches costs nothing beside a forward pass, and keeps one seeded stream for every process
count). Only the main process logs (``on_log``) and shows progress.

A step whose loss or gradient norm is not finite is never applied: the loop raises
:class:`~obliviate.errors.NonFiniteStep` naming the step and every loss term, the weights as they were after
the last good step. The optimiser, scheduler and everything accelerate prepared are released when
:func:`train` returns or raises (a run of several trainings, e.g. attacks, holds one optimiser at a time).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from obliviate.data.tokenize import EncodedDataset
from obliviate.errors import NonFiniteStep
from obliviate.masks.mask import ParameterMask
from obliviate.methods.objective import Batch, Objective
from obliviate.models.sharding import gradient_sync, is_sharded, whole
from obliviate.training.checkpoint import Checkpointing
from obliviate.training.schedule import TrainingConfig, build_optimizer

logger = logging.getLogger(__name__)


class StepInspector(Protocol):
    """Sees each optimiser step's model with its gradient and the step's micro-batches (G-effect): before clipping
    (the raw accumulated gradient) when ``before_clipping``, else just before the optimiser applies it."""

    before_clipping: bool

    def __call__(self, step: int, model: torch.nn.Module, batches: list[Batch]) -> None: ...


@dataclass
class TrainingResult:
    steps: int
    seconds: float
    last_logs: dict[str, float] = field(default_factory=dict)
    state_mb: float = 0.0  # this process's parameters, gradients and optimiser state (its shards when sharded)
    warnings: list[str] = field(default_factory=list)  # what went wrong without stopping the run


def local_megabytes(tensors: list[torch.Tensor]) -> float:
    """The memory of ``tensors`` held by this process (a sharded tensor's local shard)."""
    return sum(t.to_local().nbytes if hasattr(t, "to_local") else t.nbytes for t in tensors) / 2**20


def training_state_mb(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """Parameters + one gradient per trainable parameter + the optimiser's state, as held by this process."""
    parameters = list(model.parameters())
    state = [v for values in optimizer.state.values() for v in values.values() if isinstance(v, torch.Tensor)]
    return local_megabytes(parameters) + local_megabytes([p for p in parameters if p.requires_grad]) + \
        local_megabytes(state)


def micro_batches(datasets: dict[str, EncodedDataset], primary: str, batch_size: int, seed: int
                  ) -> Iterator[Batch]:
    """Endless micro-batches: seeded shuffled passes over ``primary``, random batches of the other splits."""
    generator = torch.Generator().manual_seed(seed)
    others = {name: datasets[name] for name in sorted(datasets) if name != primary}  # fixed draw order
    while True:
        for batch in datasets[primary].loader(batch_size, shuffle=True, generator=generator):
            paired = {primary: batch}
            for name, data in others.items():
                rows = torch.randint(len(data), (batch_size,), generator=generator).tolist()
                paired[name] = data.collate([data[row] for row in rows])
            yield paired


def unwrapped(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimiser inside accelerate's wrapper (the checkpoint reads its state by parameter name)."""
    return getattr(optimizer, "optimizer", optimizer)


def mean_over_processes(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes (every process passes the same keys in the same order, those of the
    same objective); itself on one process."""
    if accelerator.num_processes == 1:
        return values
    keys = list(values)
    local = torch.tensor([values[key] for key in keys], dtype=torch.float64, device=accelerator.device)
    return dict(zip(keys, accelerator.reduce(local, reduction="mean").tolist()))


def train(model: torch.nn.Module, objective: Objective, datasets: dict[str, EncodedDataset], primary: str,
          config: TrainingConfig, accelerator: Accelerator, seed: int, *,
          on_log: Callable[[dict[str, float]], None] = lambda record: None,
          mask: ParameterMask | None = None, after_step: Callable[[int], None] | None = None,
          inspect: StepInspector | None = None,
          checkpoint: Checkpointing | None = None, description: str = "train") -> TrainingResult:
    """Minimise ``objective`` for ``config.total_steps(len(datasets[primary]))`` optimiser steps; ``inspect``
    sees the model with each step's gradient and micro-batches (:class:`StepInspector`);
    ``checkpoint`` saves the training state every few steps and, resuming, starts from the saved one."""
    total = config.total_steps(len(datasets[primary]))
    if mask is not None:
        mask.attach(model)
    optimizer, scheduler = build_optimizer(model, config, total, mask.partially_masked() if mask else set())
    # The scheduler is stepped here, once per optimiser step: accelerate's wrapper would step it once per
    # process, assuming accelerate-sharded dataloaders, which this loop does not use. A sharded model (FSDP2)
    # is left out of accelerate: it reduces its own gradients.
    sharded = is_sharded(model)
    if not sharded:
        model, optimizer = accelerator.prepare(model, optimizer)
    parameters = [p for p in model.parameters() if p.requires_grad]
    stream = itertools.islice(  # this process's share: every num_processes-th micro-batch
        micro_batches({k: v for k, v in datasets.items() if k in objective.splits | {primary}}, primary,
                      config.batch_size, seed), accelerator.process_index, None, accelerator.num_processes)
    accumulation = config.gradient_accumulation_steps
    first = 1
    if checkpoint is not None:
        checkpoint = checkpoint.with_parts({"scheduler": scheduler, "objective": objective})
        if checkpoint.resume and checkpoint.saved_step() is not None:
            first = checkpoint.load(model, unwrapped(optimizer), accumulation * accelerator.num_processes) + 1
            for _ in range((first - 1) * accumulation):  # replay the seeded stream to the saved position
                next(stream)
            if accelerator.is_main_process:
                logger.info("%s: resumed after step %d from %s", description, first - 1, checkpoint.folder)
    model.train()
    start = time.perf_counter()
    logs: dict[str, float] = {}
    warnings: list[str] = []
    progress = tqdm(range(first, total + 1), desc=description, initial=first - 1, total=total,
                    disable=not accelerator.is_local_main_process)
    try:
        for step in progress:
            step_start = time.perf_counter()
            sums: dict[str, float] = {}
            batches: list[Batch] = []
            for micro in range(accumulation):
                batch = {name: part.to(accelerator.device) for name, part in next(stream).items()}
                batches.append(batch)
                syncing = micro == accumulation - 1
                gradient_sync(model, syncing)
                with contextlib.nullcontext() if syncing or sharded else accelerator.no_sync(model):
                    output = objective(model, batch)
                    accelerator.backward(output.loss / accumulation)
                for key, value in output.logs.items():
                    sums[key] = sums.get(key, 0.0) + value / accumulation
            sums = mean_over_processes(accelerator, sums)
            if inspect is not None and inspect.before_clipping:
                inspect(step, model, batches)
            max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
            grad_norm = whole(accelerator.clip_grad_norm_(parameters, max_norm))
            if not (math.isfinite(sums["loss"]) and math.isfinite(float(grad_norm))):
                optimizer.zero_grad(set_to_none=True)
                raise NonFiniteStep(step, {**sums, "grad_norm": float(grad_norm)}, description)
            if float(grad_norm) == 0.0 and not warnings:
                warnings.append(f"{description} step {step}: the gradient is exactly zero (a collapsed model, e.g. "
                                "after too large a learning rate, or nothing trainable reached by the loss)")
                logger.warning("%s", warnings[-1])
            lr = scheduler.get_last_lr()[0]
            if mask is not None:
                mask.before_step(lr, config.weight_decay)
            if inspect is not None and not inspect.before_clipping:
                inspect(step, model, batches)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            objective.after_step(sums)
            logs = {"step": step, **sums, "lr": lr, "grad_norm": float(grad_norm),
                    "step_seconds": round(time.perf_counter() - step_start, 3),
                    "seconds": round(time.perf_counter() - start, 3)}
            progress.set_postfix(loss=f"{sums['loss']:.4f}")
            if accelerator.is_main_process and (step % config.logging_steps == 0 or step == total):
                on_log(logs)
            if after_step is not None:  # e.g. evaluation points of a fine-tune attack
                after_step(step)
                model.train()
            if checkpoint is not None and (step % checkpoint.every == 0 or step == total):
                checkpoint.save(model, unwrapped(optimizer), step, accumulation * accelerator.num_processes)
        state_mb = training_state_mb(model, unwrapped(optimizer))
    finally:
        progress.close()
        accelerator.free_memory()  # accelerate's references to the model and optimiser
        del optimizer, scheduler
    return TrainingResult(steps=total, seconds=time.perf_counter() - start, last_logs=logs, state_mb=state_mb,
                          warnings=warnings)
