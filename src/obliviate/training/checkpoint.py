"""Resumable training state (``unlearn.save_every``, ``logger.resume``), at any number of processes.

Every ``every`` optimiser steps, :meth:`Checkpointing.save` writes the whole training state into one folder, in
formats that cannot run code when read (safetensors and JSON; never a pickle):

* ``state/``: the trained weights (only the parameters that train: the model, its adapter, or RMU's few
  matrices) and the optimiser's tensors, written by ``torch.distributed.checkpoint`` with its safetensors
  storage (``HuggingFaceStorageWriter``): each process writes its own shards, and any number of processes reads
  them back, so a run saved by 2 processes (sharded or not) resumes on 1 or 4. ``optimizer.json`` holds the
  optimiser's other values (learning rates, betas);
* ``rng_<process>.json``/``.safetensors``: each process's random state (Python, NumPy, torch, CUDA);
* ``<part>.json``/``.safetensors``: each part of the training's own state, whole: the learning-rate scheduler,
  the objective's terms (:meth:`~obliviate.methods.objective.Objective.state_dict`: PDU's dual variable, RMU's
  topic counter, ILU's call counter), the evaluation points so far and the G-effect probe's averages;
* ``progress.json``: the step.

The data position needs no file: the micro-batch stream is seeded, so resuming replays it and skips the
micro-batches already consumed. Reference quantities cached before training (NPO's S_ref, RMU's starting values,
the KL terms' frozen copy) come from the starting model, so they are computed again before the state is loaded.
Resuming on another number of processes continues the same stream, but each process's random state is then not
its own (dropout draws differ), and a stochastic layer makes the run differ from an uninterrupted one.

The final step is saved too, so a run stopped after training (during evaluation or attacks) resumes without
training again. Saving is atomic: the state is written to ``<folder>.tmp`` and swapped in, so a kill during a save
leaves the previous checkpoint intact. A folder holding anything else, or a torn file, is refused in one line.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from obliviate.errors import UserError
from obliviate.io import write_json_atomic
from obliviate.loggers.json_logger import PROGRESS, saved_step
from obliviate.models.sharding import whole

STATE, OPTIMIZER = "state", "optimizer.json"
TENSOR = "__tensor__"  # a tensor's place in a part's JSON: {"__tensor__": "<key in the part's safetensors>"}
TRAINED = StateDictOptions(ignore_frozen_params=True)
OPTIMISER = StateDictOptions(ignore_frozen_params=True, flatten_optimizer_state_dict=True)
KNOWN_FILES = re.compile(r"^(progress\.json|optimizer\.json|rng_\d+\.(json|safetensors)|[a-z_]+\.(json|safetensors))$")
KNOWN_STATE_FILES = re.compile(r"^((shard-\d+-)?model-\d+-of-\d+\.safetensors|model\.safetensors\.index\.json)$")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _split_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with each tensor replaced by a reference into ``tensors`` (filled here; sharded tensors are
    gathered whole, so every process must call this alike)."""
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = whole(value.detach()).contiguous().cpu()
        return {TENSOR: key}
    if isinstance(value, dict):
        return {str(k): _split_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_tensors(v, tensors) for v in value]
    return value


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {TENSOR}:
            return tensors[value[TENSOR]]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value


def state_files(state: dict[str, Any]) -> tuple[Any, dict[str, torch.Tensor]]:
    """``state`` (nested dicts and lists of numbers, strings and tensors) as a JSON structure and its tensors."""
    tensors: dict[str, torch.Tensor] = {}
    return _split_tensors(state, tensors), tensors


def write_state(folder: Path, name: str, structure: Any, tensors: dict[str, torch.Tensor]) -> None:
    """What :func:`state_files` made, as ``<name>.json`` and, when it holds tensors, ``<name>.safetensors``."""
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(structure))


def read_state(folder: Path, name: str) -> dict[str, Any]:
    """What :func:`write_state` wrote."""
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return _join_tensors(json.loads((folder / f"{name}.json").read_text()), tensors)


def random_state() -> dict[str, Any]:
    version, words, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = numpy.random.get_state()
    state = {"python": [version, list(words), gauss], "numpy": [kind, keys.tolist(), position, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    numpy.random.set_state((kind, numpy.array(keys, dtype=numpy.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the entries that share memory with an earlier one (tied embeddings and head)."""
    seen, kept = set(), {}
    for key, tensor in state.items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if (address := local.untyped_storage().data_ptr()) not in seen:
            seen.add(address)
            kept[key] = tensor
    return kept


def training_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The trained weights and the optimiser's flattened state (its tensors, and its other values)."""
    weights = unique_tensors(get_model_state_dict(model, options=TRAINED))
    flat = get_optimizer_state_dict(model, optimizer, options=OPTIMISER)
    tensors = {f"model.{k}": v for k, v in weights.items()}
    tensors.update({f"optim.{k}": v for k, v in flat.items() if isinstance(v, torch.Tensor)})
    return tensors, {k: v for k, v in flat.items() if not isinstance(v, torch.Tensor)}


def check_folder(folder: Path) -> None:
    """Refuse a checkpoint folder that holds a file this module does not write."""
    state = folder / STATE
    strangers = [p for p in folder.iterdir() if p.name != STATE and not KNOWN_FILES.match(p.name)]
    strangers += [p for p in state.iterdir() if not KNOWN_STATE_FILES.match(p.name)] if state.is_dir() else []
    if strangers or not state.is_dir():
        what = f"'{strangers[0]}', which this engine never writes" if strangers else f"no '{state.name}/'"
        raise UserError(f"the checkpoint '{folder}' holds {what}; nothing in it is loaded: delete the folder to "
                        "start again, or drop --logger.resume")


@dataclass(frozen=True)
class Checkpointing:
    folder: Path
    every: int
    resume: bool
    parts: dict[str, Stateful] = field(default_factory=dict)  # name -> the training's own stateful objects

    def saved_step(self) -> int | None:
        return saved_step(self.folder)

    def with_parts(self, parts: dict[str, Stateful]) -> "Checkpointing":
        return Checkpointing(self.folder, self.every, self.resume, {**self.parts, **parts})

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, per_step: int) -> None:
        """Every process calls this: each writes its shards and random state, the main one the rest and the swap;
        ``per_step``: micro-batches per optimiser step over all processes (accumulation × processes)."""
        temporary = self.folder.with_name(self.folder.name + ".tmp")
        old = self.folder.with_name(self.folder.name + ".old")
        main = main_process()
        if main:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
        barrier()
        tensors, values = training_tensors(model, optimizer)
        dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(
            str(temporary / STATE), save_distributed=dist.is_initialized(), enable_consolidation=False),
            no_dist=not dist.is_initialized())
        parts = {name: state_files(part.state_dict()) for name, part in self.parts.items()}  # on every process
        write_state(temporary, f"rng_{dist.get_rank() if dist.is_initialized() else 0}", *state_files(random_state()))
        barrier()
        if main:
            for name, (structure, part_tensors) in parts.items():
                write_state(temporary, name, structure, part_tensors)
            (temporary / OPTIMIZER).write_text(json.dumps(values))
            write_json_atomic(temporary / PROGRESS, {"step": step, "micro_batches_per_step": per_step})
            shutil.rmtree(old, ignore_errors=True)  # left by a kill during the previous swap
            if self.folder.exists():
                self.folder.rename(old)
            temporary.rename(self.folder)
            shutil.rmtree(old, ignore_errors=True)
        barrier()

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, per_step: int) -> int:
        """Restore the saved state into the model, the optimiser and the parts; the step it was saved at. Another
        number of processes may resume it if each step still takes the same micro-batches (``per_step``)."""
        folder = self.folder if (self.folder / PROGRESS).is_file() else self.folder.with_name(self.folder.name + ".old")
        check_folder(folder)
        progress = json.loads((folder / PROGRESS).read_text())
        if (saved_per_step := progress.get("micro_batches_per_step", per_step)) != per_step:
            raise UserError(f"the checkpoint '{folder}' took {saved_per_step} micro-batches per step (accumulation × "
                            f"processes) and this run takes {per_step}: set unlearn.gradient_accumulation_steps so "
                            "that accumulation × processes is the same, and every step sees the same examples")
        tensors, values = training_tensors(model, optimizer)  # the layout to fill (initialises the optimiser state)
        try:
            dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(folder / STATE)),
                     no_dist=not dist.is_initialized())
            saved = json.loads((folder / OPTIMIZER).read_text())
            parts = {name: read_state(folder, name) for name in self.parts}
            rank_file = f"rng_{dist.get_rank() if dist.is_initialized() else 0}"
            rng = read_state(folder, rank_file) if (folder / f"{rank_file}.json").is_file() else None
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, CheckpointException) as error:
            raise UserError(f"the checkpoint '{folder}' cannot be read ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200]}); delete it to start again") from None
        set_model_state_dict(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
                             options=StateDictOptions(strict=False))
        flat = {**{k[6:]: v for k, v in tensors.items() if k.startswith("optim.")},
                **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in values}}
        set_optimizer_state_dict(model, optimizer, flat, options=OPTIMISER)
        for name, part in self.parts.items():
            part.load_state_dict(parts[name])
        if rng is not None:
            set_random_state(rng)
        return int(progress["step"])
