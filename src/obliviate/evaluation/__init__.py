"""Evaluation: metrics declared in :mod:`obliviate.evaluation.metrics` (one module per family, each metric
registered with what it reads and needs), run on role-carrying splits by
:func:`~obliviate.evaluation.evaluator.evaluate`.
"""

from obliviate.evaluation import metrics  # noqa: F401  (registers every metric module)
from obliviate.evaluation.declarations import METRICS, MODEL_METRICS

DEFAULT_METRICS = ["prob", "rouge_l_recall", "truth_ratio", "forget_quality", "mcq_acc"]

__all__ = ["DEFAULT_METRICS", "METRICS", "MODEL_METRICS"]
