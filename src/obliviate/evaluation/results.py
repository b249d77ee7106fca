"""One model's evaluation, and the two results files it is written to.

``metrics.json`` (per stage): ``{<split>: {<metric>: aggregate}, "model": {<model-level metric>: value},
"lm_eval": {<task>: accuracy}, "not_computed": {"<split or model>.<metric>": "which input is missing"}}``.
``per_example.json`` (per stage): ``{<split>: {<metric>: [value per example], "generations": {<metric>:
[{"prompt", "ground_truth", "generation"} per example]}}}``. The names ``model``, ``lm_eval``,
``not_computed`` and ``generations`` are reserved (no split may take them). A metric with a curve adds its
points beside its aggregate as ``<metric>@<point>`` (e.g. ``leak_at_k@4``, ``logit_lens@L3``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MODEL, LM_EVAL, NOT_COMPUTED, GENERATIONS = "model", "lm_eval", "not_computed", "generations"
CURVE_MARK = "@"  # metrics.json: <metric>@<point> is a point of the metric's curve (leak_at_k@4, logit_lens@L3)
Reads = Literal["qa", "text", "any"]  # what a metric scores: questions, plain texts, or every example


class NotComputed(Exception):
    """A metric's inputs are missing; the message names them (and how to provide them)."""


@dataclass(frozen=True)
class MetricResult:
    """A split's aggregate, the per-example values (None where an example lacks the input), for
    generating metrics each example's prompt, ground truth and generation, and for metrics with a curve
    (per layer, per k) its named points, recorded beside the aggregate as ``<metric>@<point>``."""

    value: float
    per_example: list[float | None]
    texts: list[dict[str, Any]] | None = None
    curve: dict[str, float] | None = None


@dataclass
class Evaluation:
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    per_example: dict[str, dict[str, list]] = field(default_factory=dict)
    generations: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    model: dict[str, float] = field(default_factory=dict)
    lm_eval: dict[str, float] = field(default_factory=dict)
    not_computed: dict[str, str] = field(default_factory=dict)

    def record(self, split: str, name: str, result: MetricResult) -> None:
        self.splits.setdefault(split, {})[name] = result.value
        for point, value in (result.curve or {}).items():
            self.splits[split][f"{name}{CURVE_MARK}{point}"] = value
        self.per_example.setdefault(split, {})[name] = result.per_example
        if result.texts is not None:
            self.generations.setdefault(split, {})[name] = result.texts

    def metrics_record(self) -> dict[str, Any]:
        """The stage's entry of metrics.json."""
        extra = {MODEL: self.model, LM_EVAL: self.lm_eval, NOT_COMPUTED: self.not_computed}
        return {**self.splits, **{key: value for key, value in extra.items() if value}}

    def per_example_record(self) -> dict[str, Any]:
        """The stage's entry of per_example.json."""
        record: dict[str, Any] = {split: dict(values) for split, values in self.per_example.items()}
        for split, texts in self.generations.items():
            record.setdefault(split, {})[GENERATIONS] = texts
        return record

    @classmethod
    def from_records(cls, metrics: dict[str, Any], per_example: dict[str, Any]) -> "Evaluation":
        """Read back what :meth:`metrics_record` and :meth:`per_example_record` wrote."""
        evaluation = cls(model=dict(metrics.get(MODEL, {})), lm_eval=dict(metrics.get(LM_EVAL, {})),
                         not_computed=dict(metrics.get(NOT_COMPUTED, {})))
        evaluation.splits = {k: dict(v) for k, v in metrics.items() if k not in (MODEL, LM_EVAL, NOT_COMPUTED)}
        for split, values in per_example.items():
            evaluation.per_example[split] = {k: v for k, v in values.items() if k != GENERATIONS}
            if GENERATIONS in values:
                evaluation.generations[split] = values[GENERATIONS]
        return evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics_record(), "per_example": self.per_example_record()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        return cls.from_records(data["metrics"], data["per_example"])
