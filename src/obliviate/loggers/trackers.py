"""Experiment trackers beside the JSON files: TensorBoard (``logger.tensorboard``, the ``tensorboard``
package, event files in the run folder's ``tensorboard/``) and Weights & Biases (``logger.wandb``, only when
the ``wandb`` package is installed; never required).

Every record the run folder appends (training steps, evaluation during unlearning, attack training) and the
attack curves become scalars: nested values are flattened to ``<log>/<key>/<subkey>`` (e.g.
``eval_log/forget/prob``), plotted against the record's ``step``. One run per experiment.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

from obliviate.errors import UserError


def scalars(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """The record's finite numbers (``step`` aside), nested keys joined by '/'."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            flat.update(scalars(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step" \
                and math.isfinite(value):
            flat[name] = float(value)
    return flat


class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, folder: Path, config: dict[str, Any], project: str, name: str) -> None:
        import wandb

        self.run = wandb.init(project=project, name=name, dir=str(folder), config=config)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "step": step})

    def close(self) -> None:
        self.run.finish()


def check_trackers(tensorboard: bool, use_wandb: bool) -> None:
    """One line if an asked-for tracker's package is missing (checked before any work)."""
    import importlib.util

    for wanted, package, key in ((tensorboard, "tensorboard", "logger.tensorboard"), (use_wandb, "wandb",
                                                                                      "logger.wandb")):
        if wanted and importlib.util.find_spec(package) is None:
            raise UserError(f"{key} is true but the {package} package is not installed; pip install {package} "
                            f"or set {key} false")
