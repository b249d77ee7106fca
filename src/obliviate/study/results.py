"""What a study's finished cells measured, read from their run folders, and the setting per method that the
study's selection rule picks among them. Both the report (:mod:`obliviate.study.report`) and a study that takes
its settings from another (``selected_in``, :mod:`obliviate.study.spec`) read them from here."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.study.cells import Study

SELECTION_START = "the target before unlearning"  # what a selection constraint is relative to
RESULT_FILES = ("metrics", "env", "attacks", "per_example")  # <name>.json in a finished cell's run folder


@dataclass(frozen=True, kw_only=True)
class FinishedCell:
    """One finished cell of a study: which it is, and its results as its run folder holds them (a file the run
    did not write reads as empty).

    ``metrics`` is metrics.json: stage (before, after) -> split (forget, retain, holdout, model, lm_eval, ...) ->
    metric -> value. ``attacks`` is attacks.json: an attack's data set name -> its curve, one point per
    evaluation (``step``, ``forget``: metric -> value, and ``task`` or ``forget_unseen``). ``env`` is env.json
    (its ``wall_time_seconds``: stage -> seconds). ``per_example`` is per_example.json: stage -> split -> metric
    -> the value of each evaluated example. ``seconds_per_step`` is the mean wall time of an unlearning step
    (train_log.jsonl; None when no step was logged).
    """

    method: str
    setting: str  # the grid values of the cell ('' without a grid)
    seed: int
    label: str  # the method and its setting, as :attr:`~obliviate.study.cells.Cell.label`
    metrics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    attacks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    per_example: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    seconds_per_step: float | None = None

    @property
    def wall_time_seconds(self) -> dict[str, float]:
        """Seconds per stage of the run (env.json; empty without it)."""
        return self.env.get("wall_time_seconds", {})


def finished_cells(study: Study) -> list[FinishedCell]:
    """Each finished cell of ``study`` (its run folder exists), in the study's order, with its results."""
    finished = []
    for cell in study.cells:
        if cell.folder.is_dir():
            files = {name: _read_json(cell.folder / f"{name}.json") for name in RESULT_FILES}
            finished.append(FinishedCell(method=cell.method, setting=cell.setting, seed=cell.seed, label=cell.label,
                                         metrics=files["metrics"], attacks=files["attacks"], env=files["env"],
                                         per_example=files["per_example"],
                                         seconds_per_step=_seconds_per_step(cell.folder / "train_log.jsonl")))
    return finished


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _seconds_per_step(log: Path) -> float | None:
    """The mean ``step_seconds`` of a training log (None without one, or with no step logged)."""
    if not log.is_file() or not (lines := log.read_text().splitlines()):
        return None
    return statistics.fmean(json.loads(line)["step_seconds"] for line in lines)


def seed_mean(results: list[dict]) -> dict:
    """The mean of each ``{split: {metric: value}}`` number over the seeds' results that have it."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for result in results:
        for split, metrics in result.items():
            for metric, value in metrics.items() if isinstance(metrics, dict) else ():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values[(split, metric)].append(value)
    mean: dict[str, dict[str, float]] = defaultdict(dict)
    for (split, metric), numbers in values.items():
        mean[split][metric] = statistics.fmean(numbers)
    return dict(mean)


def selected_settings(study: Study, cells: list[FinishedCell]) -> dict[str, str | None]:
    """Each method's setting chosen by the study's selection rule, from the seed-mean of each setting's metrics
    after unlearning, the constraint relative to the target before unlearning (None: no setting meets it)."""
    chosen = {}
    for method in dict.fromkeys(c.method for c in cells):
        mine = [c for c in cells if c.method == method and "after" in c.metrics]
        settings = list(dict.fromkeys(c.setting for c in mine))
        points = [{"step": 0, **seed_mean([c.metrics.get("before", {}) for c in mine])}]
        points += [{"step": number, "setting": setting,
                    **seed_mean([c.metrics["after"] for c in mine if c.setting == setting])}
                   for number, setting in enumerate(settings, 1)]
        best = study.selection.choose(points) if len(points) > 1 else None
        chosen[method] = best["setting"] if best else None
    return chosen
