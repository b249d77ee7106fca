"""Run a study's cells one after another, skipping finished ones, then write its table and plots.

A cell is finished when its run folder exists: the Unlearner writes into ``<run>.incomplete/`` and
renames it only at the very end, so an interrupted study (Ctrl-C, a killed job, a crash) leaves no
finished-looking cell behind; running the study again redoes the interrupted cell (its ``.incomplete``
folder is replaced) and skips the finished ones. A cell that fails is reported and the others still run;
the study then exits non-zero.
"""

from __future__ import annotations

import gc
import json
import logging
import shlex
import shutil
import traceback
from pathlib import Path

from obliviate.errors import Interrupted, UserError
from obliviate.evaluation.declarations import MODEL_METRICS
from obliviate.evaluation.during_training import BestRule, constraint_metric
from obliviate.evaluation.results import MODEL
from obliviate.evaluation.session import EvaluationPlan
from obliviate.experiment import run_unlearning
from obliviate.io import write_json_atomic
from obliviate.plan import plan
from obliviate.study.report import write_report
from obliviate.study.results import SELECTION_START
from obliviate.study.spec import load_study

log = logging.getLogger(__name__)


INPUTS = "inputs.json"  # in a study cell's run folder: the digest of what it read (plan.inputs_digest)


def ran_with(folder: Path) -> str | None:
    """The inputs digest a finished cell ran with (None for a cell run before digests were recorded)."""
    file = folder / INPUTS
    return json.loads(file.read_text())["digest"] if file.is_file() else None


class StudyFailed(UserError):
    """Some cells failed (their errors were printed); the finished ones are in the report."""


def check_selection(rule: BestRule, evaluation: EvaluationPlan, method: str) -> None:
    """Every metric the study's selection rule reads is computed for ``method``: ``<split>.<metric>`` with an
    evaluated split and a metric of eval.metrics, or ``model.<metric>`` for a model-level metric it triggers."""
    model_level = {name for name, declared in MODEL_METRICS if declared.triggered_by <= set(evaluation.metrics)}
    splits = {split.name for split in evaluation.splits}
    for dotted in (rule.metric, constraint_metric(rule.constraint, "study 'selection' constraint")):
        split, _, metric = dotted.partition(".")
        computed = metric in model_level if split == MODEL else split in splits and metric in evaluation.metrics
        if dotted and not computed:
            raise UserError(f"study 'selection' reads {dotted}, which method '{method}' does not compute; use "
                            "<split>.<metric> with an evaluated split and a metric of eval.metrics, or "
                            "model.<metric> for a model-level one (e.g. model.model_utility)")


def run_study(path: Path, extra_argv: list[str]) -> Path:
    """Run every unfinished cell of the study file at ``path``; return the study folder."""
    study = load_study(path, extra_argv)
    inputs = {}
    for cell in study.cells:  # every cheap check of every cell before the first long one
        try:
            planned = plan(cell.settings)
        except UserError as error:
            raise UserError(f"study method '{cell.method}' (seed {cell.seed}): {error}") from None
        if study.selection is not None:
            check_selection(study.selection, planned.evaluation, cell.method)
        inputs[cell.folder] = planned.inputs_digest()
    study.folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(study.folder / "study.json", {
        "study_file": str(path), "attacks": study.attacks,
        "selection": study.selection.describe(SELECTION_START) if study.selection else None,
        "cells": [{"method": c.method, "setting": c.setting, "seed": c.seed, "folder": str(c.folder),
                   "command": shlex.join(c.command)} for c in study.cells]})
    failed = []
    for number, cell in enumerate(study.cells, 1):
        where = f"cell {number}/{len(study.cells)} ({cell.label}, seed {cell.seed})"
        if cell.folder.is_dir() and ran_with(cell.folder) in (inputs[cell.folder], None):
            log.info("%s: finished before, skipped (%s)", where, cell.folder)
            continue
        if cell.folder.is_dir():  # finished, but its data, mask or model changed since
            stale = cell.folder.with_name(cell.folder.name + ".stale")
            shutil.rmtree(stale, ignore_errors=True)
            cell.folder.rename(stale)
            log.warning("%s: its data, mask or model changed since it ran; running it again (the old results are "
                        "in %s)", where, stale)
        log.info("%s: running", where)
        try:
            run_unlearning(cell.settings)
            write_json_atomic(cell.folder / INPUTS, {"digest": inputs[cell.folder]})
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted in {where}; finished cells are kept and the interrupted one starts again "
                              f"when the same study command runs again ({path})") from None
        except UserError as error:  # one broken cell must not lose the others
            log.error("%s failed: %s", where, error)
            failed.append(f"{cell.label} seed {cell.seed}")
        except Exception as error:  # an engine error: its traceback helps
            log.error("%s failed: %s\n%s", where, error, traceback.format_exc())
            failed.append(f"{cell.label} seed {cell.seed}")
        gc.collect()
    write_report(study)
    if failed:
        raise StudyFailed(f"{len(failed)} study cells failed ({', '.join(failed)}); fix them and run the study "
                          "again: finished cells are skipped")
    return study.folder

