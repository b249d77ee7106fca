"""Resumable training state (``unlearn.save_every``, ``logger.resume``).

Every ``every`` optimiser steps, :meth:`Checkpointing.save` writes the whole training state with accelerate's
``save_state``: the trained weights (the model, or its adapter), the optimiser, the learning-rate scheduler,
the RNG states, and the objective's own state (:meth:`~obliviate.methods.base.Objective.state_dict`: PDU's
dual variable, RMU's topic counter, ILU's call counter), plus ``progress.json`` with the step. The data
position needs no file: the micro-batch stream is seeded, so resuming replays it and skips the micro-batches
already consumed. Reference quantities cached before training (NPO's S_ref, RMU's starting values, the KL
terms' frozen copy) come from the starting model, so they are computed again before the state is loaded.

The final step is saved too, so a run stopped after training (during evaluation or attacks) resumes without
training again. Saving is atomic: the state is written to ``<folder>.tmp`` and swapped in, so a kill during a
save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from obliviate.io import write_json_atomic

PROGRESS = "progress.json"


def saved_step(folder: Path) -> int | None:
    """The step of the state saved in ``folder``, if there is one (a half-swapped save counts from its old copy)."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / PROGRESS).is_file():
            return int(json.loads((candidate / PROGRESS).read_text())["step"])
    return None


class MainProcessOnly:
    """What the other processes register in place of a state only the main process keeps (its evaluation points):
    every process must register as many objects as the saved state holds; this one saves and restores nothing."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """The main process's state is its own: nothing to restore here."""


@dataclass(frozen=True)
class Checkpointing:
    folder: Path
    every: int
    resume: bool
    extra: tuple[Any, ...] = ()  # more objects with state_dict/load_state_dict (e.g. the best evaluated point)

    def saved_step(self) -> int | None:
        return saved_step(self.folder)

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
            write_json_atomic(temporary / PROGRESS, {"step": step})
            shutil.rmtree(old, ignore_errors=True)  # left by a kill during the previous swap
            if self.folder.exists():
                self.folder.rename(old)
            temporary.rename(self.folder)
            shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def load(self, accelerator: Accelerator) -> int:
        """Restore the saved state into the prepared objects; the step it was saved at."""
        folder = self.folder if (self.folder / PROGRESS).is_file() else self.folder.with_name(self.folder.name + ".old")
        accelerator.load_state(str(folder))
        return int(json.loads((folder / PROGRESS).read_text())["step"])
