"""The run folder: ``<root>/<task>/<method>/<run-name>/``.

While a run works, everything goes to ``<run-name>.incomplete/``; only a run that finishes is renamed to
``<run-name>/``, so a results folder is always complete. An existing run folder is never replaced
unless ``logger.overwrite`` is true, and that is checked before any long work.

Files: ``config.json`` (the resolved config; ``--config_file`` on it reproduces the run),
``train_log.jsonl`` (one line per logged step), ``metrics.json``, ``per_example.json``, ``env.json``.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from obliviate.errors import UserError
from obliviate.io import write_json_atomic
from obliviate.registry import Registry

LOGGERS: Registry[type] = Registry("logger")


@LOGGERS.register("json")
class RunFolder:
    """Writes one run's results as JSON files under the results root."""

    def __init__(self, root: Path, task: str, method: str, run_name: str, overwrite: bool) -> None:
        name = run_name or datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S")
        if "/" in name or name.startswith("."):
            raise UserError(f"logger.name '{name}' must be a plain folder name (no '/', not starting with '.')")
        self.final = self.location(root, task, method, name)
        if self.final.exists() and not overwrite:
            raise UserError(f"run folder '{self.final}' already exists; choose another --logger.name "
                            "or pass --logger.overwrite true")
        self.work = self.final.with_name(name + ".incomplete")

    @staticmethod
    def location(root: Path, task: str, method: str, run_name: str) -> Path:
        """The finished run folder of a run (``run_name`` given)."""
        return root / task / method / run_name

    def start(self, config: dict[str, Any]) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)  # left by an interrupted run of the same name
        self.work.mkdir(parents=True)
        self.write_json("config.json", config)

    def path(self, name: str) -> Path:
        return self.work / name

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path(name), data)

    def log_step(self, record: dict[str, Any]) -> None:
        self.append_jsonl("train_log.jsonl", record)

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        with self.path(name).open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def finish(self) -> Path:
        if self.final.exists():
            shutil.rmtree(self.final)  # only reachable with overwrite (checked in __init__)
        self.work.rename(self.final)
        return self.final
