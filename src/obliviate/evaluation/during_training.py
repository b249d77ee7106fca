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

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from obliviate.errors import UserError

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
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in self.tensors.items():
                parameters[name].copy_(tensor)


def plot_eval_curves(points: list[Point], path: Path, best_step: int | None, title: str) -> None:
    """One panel per split: each metric against the step, the best step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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

