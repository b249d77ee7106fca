"""A study as :func:`~obliviate.study.spec.load_study` builds it: its cells (one experiment each) and what its
report shows. Data only: reading a study file is :mod:`obliviate.study.spec`'s work, reading finished cells
:mod:`obliviate.study.results`'."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.config.settings import Settings
from obliviate.evaluation.during_training import BestRule
from obliviate.loggers import RunFolder
from obliviate.methods import METHODS


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One experiment of the study: a method at one setting of its grid and a seed, with every attack."""

    method: str
    setting: str  # the grid values of this cell, e.g. "unlearn.lr=1e-05" ('' without a grid)
    seed: int
    config_file: str
    overrides: dict[str, Any]  # dotted key -> value, applied over the config file (typed, or CLI strings)
    settings: Settings
    grid: dict[str, Any]  # the grid values of this cell (its setting as overrides; empty without a grid)

    @property
    def label(self) -> str:
        """The method and its setting: 'NPO [unlearn.lr=1e-05]'."""
        return f"{self.method} [{self.setting}]" if self.setting else self.method

    @property
    def folder(self) -> Path:
        """Where the finished experiment lives (the run folder its logger writes)."""
        s = self.settings
        return RunFolder.location(Path(s.logger_json.root), s.unlearn.task_name,
                                  METHODS.canonical(s.unlearn.unlearn_method), s.logger.name)

    @property
    def command(self) -> list[str]:
        """The unlearn_model.py command line that runs this cell alone."""
        return ["python", "src/exec/unlearn_model.py", "--config_file", self.config_file,
                *(part for key, value in self.overrides.items() for part in (f"--{key}", as_argument(value)))]


@dataclass(frozen=True, kw_only=True)
class Study:
    """A checked study file: every cell in run order, and what the report shows of them."""

    name: str
    folder: Path
    attacks: dict[str, str]  # label -> the attack's data set name (the key in attacks.json)
    cells: list[Cell]
    forget_metrics: list[str]
    utility_metric: str
    selection: BestRule | None = None
    show_all_settings: bool = False
    compare: tuple[tuple[str, str], ...] = ()  # (A, B): A − B per seed
    control: str | None = None  # the method whose cells are the target attacked without unlearning

    @property
    def has_grid(self) -> bool:
        return any(cell.setting for cell in self.cells)


def as_argument(value: Any) -> str:
    """A JSON value as the command line writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
