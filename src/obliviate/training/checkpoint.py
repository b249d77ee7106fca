"""Resumable training state (``unlearn.save_every``, ``logger.resume``).

Every ``every`` optimiser steps, :meth:`Checkpointing.save` writes the whole training state: with accelerate's
``save_state``, the trained weights (the model, or its adapter), the optimiser and the RNG states; and, written
here as JSON with any tensors beside it in safetensors (formats that cannot run code when read), each named part
of the training's own state: the learning-rate scheduler, the objective's terms
(:meth:`~obliviate.methods.objective.Objective.state_dict`: PDU's dual variable, RMU's topic counter, ILU's call
counter), the evaluation points so far and the G-effect probe's averages, plus ``progress.json`` with the step.
The data position needs no file: the micro-batch stream is seeded, so resuming replays it and skips the
micro-batches already consumed. Reference quantities cached before training (NPO's S_ref, RMU's starting values,
the KL terms' frozen copy) come from the starting model, so they are computed again before the state is loaded.

The final step is saved too, so a run stopped after training (during evaluation or attacks) resumes without
training again. Saving is atomic: the state is written to ``<folder>.tmp`` and swapped in, so a kill during a
save leaves the previous checkpoint intact. With several processes the main one writes the parts (every process
holds the same values: the objective updates from logs averaged over processes), and every process reads them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from obliviate.io import write_json_atomic

PROGRESS = "progress.json"
TENSOR = "__tensor__"  # a tensor's place in a part's JSON: {"__tensor__": "<key in the part's safetensors>"}


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def saved_step(folder: Path) -> int | None:
    """The step of the state saved in ``folder``, if there is one (a half-swapped save counts from its old copy)."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / PROGRESS).is_file():
            return int(json.loads((candidate / PROGRESS).read_text())["step"])
    return None


def _split_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with each tensor replaced by a reference into ``tensors`` (filled here)."""
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().contiguous().cpu()
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


def write_state(folder: Path, name: str, state: dict[str, Any]) -> None:
    """``state`` (nested dicts and lists of numbers, strings and tensors) as ``<name>.json`` and, when it holds
    tensors, ``<name>.safetensors``."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _split_tensors(state, tensors)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(structure))


def read_state(folder: Path, name: str) -> dict[str, Any]:
    """What :func:`write_state` wrote."""
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return _join_tensors(json.loads((folder / f"{name}.json").read_text()), tensors)


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

    def save(self, accelerator: Accelerator, step: int) -> None:
        """Every process calls this: each saves its RNG state, the main process the rest and does the swap."""
        temporary = self.folder.with_name(self.folder.name + ".tmp")
        old = self.folder.with_name(self.folder.name + ".old")
        main = accelerator.is_main_process
        if main:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if main:
            for name, part in self.parts.items():
                write_state(temporary, name, part.state_dict())
            write_json_atomic(temporary / PROGRESS, {"step": step})
            shutil.rmtree(old, ignore_errors=True)  # left by a kill during the previous swap
            if self.folder.exists():
                self.folder.rename(old)
            temporary.rename(self.folder)
            shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def load(self, accelerator: Accelerator) -> int:
        """Restore the saved state into the prepared objects and the parts; the step it was saved at."""
        folder = self.folder if (self.folder / PROGRESS).is_file() else self.folder.with_name(self.folder.name + ".old")
        accelerator.load_state(str(folder))
        for name, part in self.parts.items():
            part.load_state_dict(read_state(folder, name))
        return int(json.loads((folder / PROGRESS).read_text())["step"])
