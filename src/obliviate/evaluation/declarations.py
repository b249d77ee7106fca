"""How metrics declare themselves, and the two metric registries.

A per-split metric is a function of one split's :class:`~obliviate.evaluation.queries.SplitScores`,
registered with :func:`metric` and what the rest of the engine needs to know about it:

* ``reads``: the examples it scores, ``"qa"`` (questions), ``"text"`` (plain texts) or ``"any"``;
* ``roles``: the split roles it applies to (see :mod:`obliviate.evaluation.splits`);
* ``reference``: per-example metrics it needs from the retain model's evaluation of the same split
  (``forget_quality`` needs the retain model's ``truth_ratio``); the retain model is then evaluated on them;
* ``generates``: it scores greedy generations (their texts are kept in per_example.json);
* ``knowledge_up``: the roles on which a HIGHER value means MORE knowledge (e.g. ``prob`` everywhere;
  ``forget_quality`` nowhere; the truth ratio's ``min(R, 1/R)`` nowhere on forget/holdout);
* ``membership``: a per-example membership score (higher = more member-like); the model-level
  ``<name>_auc`` (forget against holdout) is registered with it;
* ``version``: bumped when its numbers change (part of the evaluation cache key);
* ``setup_check``: a cheap check run when the experiment is planned, before any long work (e.g. that a
  scoring model's files are intact);
* ``runs_sharded``: it works on weights sharded over processes (``overall.sharding fsdp``).

A model-level metric (:func:`model_metric`) is computed from the per-split results after them, when
every metric of its ``triggered_by`` was asked for. Whichever metric cannot be computed raises
:class:`NotComputed` saying which input is missing; the evaluation records the reason instead of
dropping the metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.results import Evaluation, MetricResult, NotComputed, Reads
from obliviate.evaluation.splits import ALL_ROLES, Role, Split
from obliviate.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[[SplitScores], MetricResult]
    reads: Reads = "qa"
    roles: frozenset[Role] = ALL_ROLES
    reference: tuple[str, ...] = ()
    generates: bool = False
    knowledge_up: frozenset[Role] = ALL_ROLES
    membership: bool = False
    version: int = 1
    setup_check: Callable[[], Any] | None = None
    runs_sharded: bool = True  # works on weights sharded over processes (FSDP)
    options_on: frozenset[Role] = frozenset()  # roles of split where it scores each question's options

    def scores_options(self, split: Split) -> bool:
        """Whether it scores the options (base and wrong answers, :meth:`SplitScores.option_queries`) of ``split``."""
        return self.applies_to(split) and split.role in self.options_on

    @property
    def description(self) -> str:
        return (self.compute.__doc__ or self.name).strip().splitlines()[0]

    def applies_to(self, split: Split) -> bool:
        if split.role not in self.roles:
            return False
        if self.reads == "qa":
            return bool(split.questions)
        return bool(split.texts) if self.reads == "text" else bool(split.examples)

    def higher_means_knowledge(self, role: Role) -> bool:
        return role in self.knowledge_up


@dataclass
class ModelInputs:
    """What a model-level metric reads: the splits, the per-split results so far and the retain reference."""

    splits: list[Split]
    evaluation: Evaluation
    reference: "Evaluation | None"

    def primary(self, role: Role) -> list[Split]:
        return [split for split in self.splits if split.primary and split.role is role]

    def one_primary(self, role: Role, setting: str) -> Split:
        found = self.primary(role)
        if not found:
            raise NotComputed(f"needs a {role.value} split ({setting} is empty)")
        return found[0]

    def values(self, split: Split, name: str) -> list[Any]:
        """Per-example values of ``name`` on ``split``, or NotComputed with the reason."""
        values = self.evaluation.per_example.get(split.name, {}).get(name)
        if values is None:
            raise NotComputed(self._missing(split, name))
        return values

    def value(self, split: Split, name: str) -> float:
        value = self.evaluation.splits.get(split.name, {}).get(name)
        if value is None:
            raise NotComputed(self._missing(split, name))
        return value

    def _missing(self, split: Split, name: str) -> str:
        reason = self.evaluation.not_computed.get(f"{split.name}.{name}")
        return f"needs {split.name}.{name}" + (f" ({reason})" if reason else f" (add {name} to eval.metrics)")


@dataclass(frozen=True)
class ModelMetric:
    name: str
    compute: Callable[[ModelInputs], float]
    triggered_by: frozenset[str]
    reference: tuple[tuple[Role, str], ...] = ()  # (role of a primary split, metric) the retain model provides
    version: int = 1

    @property
    def description(self) -> str:
        return (self.compute.__doc__ or self.name).strip().splitlines()[0]


METRICS: Registry[Metric] = Registry("metric")
MODEL_METRICS: Registry[ModelMetric] = Registry("model-level metric")


def metric(name: str, *, reads: Reads = "qa", roles: frozenset[Role] = ALL_ROLES, reference: tuple[str, ...] = (),
           generates: bool = False, knowledge_up: frozenset[Role] = ALL_ROLES, membership: bool = False,
           version: int = 1, setup_check: Callable[[], Any] | None = None, runs_sharded: bool = True,
           options_on: frozenset[Role] = frozenset()) -> Callable[[Callable], Callable]:
    """Register the decorated ``compute(scores) -> MetricResult`` as the per-split metric ``name``."""

    def decorate(compute: Callable[[SplitScores], MetricResult]) -> Callable:
        METRICS.register(name)(Metric(name, compute, reads, frozenset(roles), tuple(reference), generates,
                                      frozenset(knowledge_up), membership, version, setup_check, runs_sharded,
                                      frozenset(options_on)))
        if membership:
            MODEL_METRICS.register(f"{name}_auc")(ModelMetric(
                f"{name}_auc", _forget_vs_holdout_auc(name), frozenset({name}), version=version))
        return compute

    return decorate


def model_metric(name: str, *, triggered_by: set[str], reference: tuple[tuple[Role, str], ...] = (),
                 version: int = 1) -> Callable[[Callable], Callable]:
    """Register the decorated ``compute(inputs) -> float`` as the model-level metric ``name``."""

    def decorate(compute: Callable[[ModelInputs], float]) -> Callable:
        MODEL_METRICS.register(name)(ModelMetric(name, compute, frozenset(triggered_by), reference, version))
        return compute

    return decorate


def membership_auc(members: list[float], non_members: list[float]) -> float:
    """ROC AUC (sklearn) of membership scores, the members (the forget split) as the POSITIVE class:
    1 = forget examples are recognised as trained on, 0.5 = indistinguishable from never-seen data (the aim
    of unlearning), below 0.5 = the forget set looks less familiar than unseen data (over-unlearning).
    open-unlearning takes holdout as the positive class with negated scores: the same number."""
    from sklearn.metrics import roc_auc_score  # imported when used: about a second at every start otherwise

    return float(roc_auc_score([1] * len(members) + [0] * len(non_members), members + non_members))


def _forget_vs_holdout_auc(name: str) -> Callable[[ModelInputs], float]:
    def auc(inputs: ModelInputs) -> float:
        forget = inputs.one_primary(Role.FORGET, "dataset.forget_dataset_name")
        holdout = inputs.one_primary(Role.HOLDOUT, "dataset.holdout_dataset_name")
        return membership_auc(inputs.values(forget, name), inputs.values(holdout, name))

    auc.__doc__ = f"ROC AUC of {name}: forget examples (positive) against holdout examples."
    return auc


def mean_of(values: list[float | None]) -> float:
    """Mean of the values that exist (per-example lists hold None where an example lacks the input)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


@dataclass
class Requirements:
    """Per split, the metrics the retain model's evaluation must provide for this evaluation; ``required_by``
    names the requested metrics that cannot do without it (a model-level metric such as PrivLeak can: it is
    then reported as not computed)."""

    by_split: dict[str, set[str]] = field(default_factory=dict)
    required_by: set[str] = field(default_factory=set)

    @property
    def metrics(self) -> list[str]:
        return sorted({name for names in self.by_split.values() for name in names})


def reference_requirements(splits: list[Split], metrics: list[str]) -> Requirements:
    """What the requested metrics need from the retain model, as their declarations say."""
    needs = Requirements()
    for name in metrics:
        declared = METRICS.get(name)
        for split in splits:
            if declared.reference and declared.applies_to(split):
                needs.by_split.setdefault(split.name, set()).update(declared.reference)
                needs.required_by.add(name)
    for _, declared in MODEL_METRICS:
        if declared.triggered_by <= set(metrics):
            for role, needed in declared.reference:
                for split in splits:
                    if split.primary and split.role is role:
                        needs.by_split.setdefault(split.name, set()).add(needed)
    return needs
