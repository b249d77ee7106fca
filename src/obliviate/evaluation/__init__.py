"""Evaluation: answer probability, ROUGE-L recall, truth ratio, forget quality, memorisation, membership
inference and MCQ accuracy, per split."""

from obliviate.evaluation import mcq  # noqa: F401  (registers mcq_acc)
from obliviate.evaluation import membership  # noqa: F401  (registers the mia_* scores)
from obliviate.evaluation import semantic  # noqa: F401  (registers semantic_match)
from obliviate.evaluation.metrics import METRICS

__all__ = ["METRICS"]
