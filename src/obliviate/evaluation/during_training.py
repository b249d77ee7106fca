"""Evaluation during unlearning and the best checkpoint.

With ``unlearn.eval_every K``, the splits ``unlearn.eval_splits`` are evaluated (with ``eval.metrics``) at step 0
(the starting model) and every K steps, one record per point in ``eval_log.jsonl``, drawn as ``eval_curves.png``.

A declared rule selects the best point among steps ≥ 1 (:class:`BestRule`):

* ``unlearn.best_metric`` ``<split>.<metric>`` and ``unlearn.best_goal`` ``max`` or ``min``: what is optimised,
  e.g. ``forget.forget_quality`` max, or ``forget.prob`` min;
* ``unlearn.best_constraint`` ``<split>.<metric>>=<ratio>`` (or ``<=``): a point is eligible only if the metric
  is at least (at most) ``ratio`` × its value at step 0, e.g. ``retain.prob>=0.95`` (utility kept within 5 %).

Ties go to the earliest step. The trainable weights at the best point are kept (a CPU copy of the trainable
tensors only: the adapter with LoRA), evaluated in full at the end beside the last ones (``best`` in
metrics.json, ``best_checkpoint.json``), and saved as ``model_best/`` when the model is saved.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from obliviate.errors import UserError
from obliviate.models.sharding import local_like
from obliviate.plotting import pyplot

logger = logging.getLogger(__name__)
CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\s*(>=|<=)\s*([0-9.eE+-]+)\s*$")
Point = dict  # {"step": int, "<split>": {"<metric>": value}}


def point_value(point: Point, dotted: str) -> float | None:
    split, _, metric = dotted.partition(".")
    value = point.get(split, {}).get(metric)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass(frozen=True)
class BestRule:
    """Which point is best: the highest (``max``) or lowest (``min``) ``metric``, or the one closest to ``target``
    (``closest``: matched forgetting), among the points meeting ``constraint`` relative to the first point. Used
    for the best checkpoint (points = evaluation steps) and by studies (points = the settings of a grid)."""

    metric: str  # "<split>.<metric>"
    goal: str  # "max" | "min" | "closest"
    constraint: str = ""  # "<split>.<metric>>=<ratio>" or "<=", relative to step 0
    target: float = 0.0  # the value "closest" aims at

    @classmethod
    def parse(cls, metric: str, goal: str, constraint: str, splits: list[str], metrics: list[str]) -> "BestRule":
        """The rule, checked against the evaluated ``splits`` and ``metrics`` (one-line errors)."""
        named = (("unlearn.best_metric", metric),
                 ("unlearn.best_constraint", constraint_metric(constraint, "unlearn.best_constraint")))
        for key, dotted in named:
            if not dotted:
                continue
            split, _, name = dotted.partition(".")
            if split not in splits or name not in metrics:
                raise UserError(f"{key} '{dotted}' is not evaluated during unlearning; use <split>.<metric> with a "
                                f"split of unlearn.eval_splits ({', '.join(splits)}) and a metric of eval.metrics "
                                f"({', '.join(metrics)})")
        return cls(metric, goal, constraint)

    def describe(self, start: str = "step 0") -> str:
        text = f"{self.metric} closest to {self.target:g}" if self.goal == "closest" else f"{self.goal} {self.metric}"
        return text + (f" subject to {self.constraint} × {start}" if self.constraint else "")

    def eligible(self, point: Point, start: Point) -> bool:
        if not self.constraint:
            return True
        split, metric, relation, ratio = CONSTRAINT.match(self.constraint).groups()
        value, initial = point_value(point, f"{split}.{metric}"), point_value(start, f"{split}.{metric}")
        if value is None or initial is None:
            return False
        bound = float(ratio) * initial
        return value >= bound if relation == ">=" else value <= bound

    def choose(self, points: list[Point]) -> Point | None:
        """The best eligible point after the first (the earliest ``step`` on ties), or None."""
        start = points[0]
        candidates = [p for p in points[1:] if self.eligible(p, start) and point_value(p, self.metric) is not None]
        if not candidates:
            return None
        if self.goal == "closest":
            return max(candidates, key=lambda p: (-abs(point_value(p, self.metric) - self.target), -p["step"]))
        sign = 1.0 if self.goal == "max" else -1.0
        return max(candidates, key=lambda p: (sign * point_value(p, self.metric), -p["step"]))


def constraint_metric(constraint: str, key: str) -> str:
    """The ``<split>.<metric>`` a constraint bounds ('' for none); a one-line error naming ``key`` if malformed."""
    if not constraint:
        return ""
    match = CONSTRAINT.match(constraint)
    if match is None:
        raise UserError(f"{key} '{constraint}' is not <split>.<metric>>=<ratio> (or <=), e.g. "
                        "retain.prob>=0.95")
    return f"{match.group(1)}.{match.group(2)}"


class BestWeights:
    """A CPU copy of a model's trainable tensors, restorable into it."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    @classmethod
    def of(cls, model: torch.nn.Module) -> "BestWeights":
        return cls({name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad})

    def load_into(self, model: torch.nn.Module) -> None:
        """Copy the tensors back (whole ones read from a checkpoint into their shard when weights are sharded)."""
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in self.tensors.items():
                parameters[name].copy_(local_like(tensor, parameters[name]))


class EvaluationPoints:
    """The after-step callback of evaluation during unlearning: at step 0, every ``every`` steps and at the last,
    ``evaluate()`` gives the point's metrics, which ``record`` writes; with a ``rule``, the best point's trainable
    weights of ``trained`` are kept (:attr:`best`). Its state (the points, the best one's weights) is saved with a
    resumable checkpoint."""

    def __init__(self, evaluate: Callable[[], dict], record: Callable[[Point], None], trained: torch.nn.Module,
                 every: int, total: int, rule: BestRule | None) -> None:
        self.evaluate, self.record, self.trained = evaluate, record, trained
        self.every, self.total, self.rule = every, total, rule
        self.points: list[Point] = []
        self.best: tuple[Point, BestWeights] | None = None

    def __call__(self, step: int) -> None:
        if step % self.every and step != self.total:
            return
        point = {"step": step, **self.evaluate()}
        self.points.append(point)
        self.record(point)
        if self.rule is not None and step > 0 and self.rule.choose(self.points) is point:
            self.best = (point, BestWeights.of(self.trained))

    def state_dict(self) -> dict:
        best = self.best
        return {"points": self.points, "best_step": best[0]["step"] if best else None,
                "best_tensors": best[1].tensors if best else {}}

    def load_state_dict(self, state: dict) -> None:
        self.points = list(state["points"])
        if state["best_step"] is not None:
            point = next(p for p in self.points if p["step"] == state["best_step"])
            self.best = (point, BestWeights(state["best_tensors"]))

    def best_record(self) -> dict:
        """best_checkpoint.json: the rule, and the chosen step and point (None when no point qualifies)."""
        if self.best is None:
            logger.warning("no evaluated point satisfies the best-checkpoint rule (%s)", self.rule.describe())
        point = self.best[0] if self.best else None
        return {"rule": self.rule.describe(), "step": point["step"] if point else None, "point": point}

    @contextlib.contextmanager
    def best_weights(self) -> Iterator[None]:
        """The trained model with the best point's weights loaded; the last weights are back afterwards."""
        last = BestWeights.of(self.trained)
        self.best[1].load_into(self.trained)
        try:
            yield
        finally:
            last.load_into(self.trained)

    def plot(self, path: Path, title: str) -> None:
        plot_eval_curves(self.points, path, self.best[0]["step"] if self.best else None, title)


def plot_eval_curves(points: list[Point], path: Path, best_step: int | None, title: str) -> None:
    """One panel per split: each metric against the step, the best step marked."""
    plt = pyplot()
    splits = [key for key in points[0] if key != "step"]
    figure, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.8), squeeze=False)
    steps = [p["step"] for p in points]
    for axis, split in zip(axes[0], splits):
        for metric in points[0][split]:
            values = [point_value(p, f"{split}.{metric}") for p in points]
            axis.plot(steps, [math.nan if v is None else v for v in values], marker="o", label=metric)
        if best_step is not None:
            axis.axvline(best_step, color="grey", linestyle="--", label=f"best (step {best_step})")
        axis.set(title=split, xlabel="unlearning step")
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

