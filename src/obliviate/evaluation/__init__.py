"""Evaluation: per-split answer probability, ROUGE-L recall, truth ratio, forget quality, MCQ accuracy."""

from obliviate.evaluation import mcq  # noqa: F401  (registers mcq_acc)
from obliviate.evaluation.metrics import METRICS

__all__ = ["METRICS"]
