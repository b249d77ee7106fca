"""Evaluation on every process: the batches of a query are divided over the processes and the results gathered.

With one process, :func:`map_batches` is ``[compute(b) for b in batches]``. With N processes (DDP or FSDP under
``torchrun``/``accelerate launch``), process r computes batches r, r+N, r+2N, … (the batches are those a single
process would form, in the same order and with the same padding, so every number is the one a single process
computes), every process makes the same number of calls (a process short of batches repeats one and drops its
result: with sharded weights every process must take part in every forward), and every process gets all the
results back in their original order. Every process then computes the metrics from the same values, and the main
process writes them. Evaluating with N processes takes about 1/N of the time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch.distributed as dist
from tqdm.auto import tqdm

B = TypeVar("B")
R = TypeVar("R")


def processes() -> tuple[int, int]:
    """(this process's rank, the number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return processes()[0] == 0


def map_batches(batches: list[B], compute: Callable[[B], R], description: str) -> list[R]:
    """``compute`` of every batch, divided over the processes; every process returns every result, in order.
    The main process shows its progress as ``description``."""
    rank, size = processes()
    mine = batches[rank::size]
    results = [compute(batch) for batch in tqdm(mine, desc=description, leave=False, disable=rank != 0 or not mine)]
    if size == 1:
        return results
    calls = math.ceil(len(batches) / size)
    for _ in range(calls - len(mine)):  # keep step with the others; the result is not used
        compute(mine[-1] if mine else batches[0])
    everyone: list[list[R]] = [[] for _ in range(size)]
    dist.all_gather_object(everyone, results)
    return [everyone[index % size][index // size] for index in range(len(batches))]


def agreed(value: R) -> R:
    """The main process's ``value`` on every process (what every process must decide alike, e.g. a cache hit)."""
    if processes()[1] == 1:
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]
