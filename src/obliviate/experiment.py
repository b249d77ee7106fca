"""The composition root: the experiment's config schema, assembled from the fixed sections and the registries, and
the two ways to run an experiment from its settings.

Config (:mod:`obliviate.config`) is a leaf that knows no component; the registries (methods, metrics, probes,
loggers, mask scores) know no config beyond its checkers. Only here do they meet: every key declared as a
:class:`~obliviate.config.checkers.RegisteredName` is bound to its registry's names, and every registered method
with parameters adds its section ``unlearn.<Name>`` right after ``unlearn``.
"""

from __future__ import annotations

from pathlib import Path

from obliviate.config.sections import SECTIONS
from obliviate.config.settings import Settings
from obliviate.config.spec import Names, Schema, SectionSpec
from obliviate.evaluation import METRICS
from obliviate.evaluation.probes import PROBES
from obliviate.loggers import LOGGERS
from obliviate.masks.scores import MASK_SCORES
from obliviate.methods import METHODS
from obliviate.plan import plan
from obliviate.unlearner import Unlearner

COMPONENT_NAMES: Names = {registry.kind: registry.names for registry in (METHODS, METRICS, LOGGERS, MASK_SCORES)}
COMPONENT_NAMES["probe"] = lambda: list(PROBES)


def method_sections() -> Schema:
    """``unlearn.<Name>`` for every registered method with parameters."""
    return {f"unlearn.{name}": SectionSpec(f"{name} hyper-parameters ({method.__doc__.splitlines()[0]})",
                                           dict(method.params))
            for name, method in METHODS if method.params}


def experiment_schema() -> Schema:
    """The schema of an experiment (unlearn_model.py, evaluate.py, finetune.py, make_mask.py, study cells)."""
    fixed = {name: SectionSpec.of(section, COMPONENT_NAMES) for name, section in SECTIONS.items()}
    methods = method_sections()
    order = list(fixed)
    at = order.index("unlearn") + 1
    return {name: fixed.get(name) or methods[name] for name in [*order[:at], *methods, *order[at:]]}


def run_unlearning(settings: Settings) -> Path | None:
    """Plan the experiment (every check, before any long work) and run it: unlearn_model.py, study cells."""
    return Unlearner(plan(settings)).run()


def run_evaluation(settings: Settings) -> Path | None:
    """Plan an evaluation-only run and evaluate ``eval.model``: evaluate.py."""
    return Unlearner(plan(settings, unlearning=False)).evaluate_model()
