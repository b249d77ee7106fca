"""Memorisation of the answer under teacher forcing (open-unlearning ``src/evals/metrics/memorization.py``),
over the answer's tokens without the closing EOS (open-unlearning drops that position).

* ``exact_memorization`` (Tirumala et al. 2022): fraction of answer tokens equal to the teacher-forced argmax.
* ``extraction_strength`` (Carlini et al. 2021): 1 − k/|y|, k the shortest answer prefix after which the
  argmax reproduces the whole rest (1 = extracted from the first token, 0 = not even the last token).
  open-unlearning's loop stops at k = |y| − 1 when nothing matches, so its floor is 1/|y| where ours is 0.
"""

from __future__ import annotations

from obliviate.evaluation.declarations import MetricResult, mean_of, metric
from obliviate.evaluation.queries import SplitScores


@metric("exact_memorization", reads="any", version=2)
def exact_memorization(scores: SplitScores) -> MetricResult:
    """Fraction of answer tokens that are the teacher-forced argmax."""
    values = [mean_of([float(hit) for hit in stats.content().is_argmax]) for stats in scores.answer_tokens]
    return MetricResult(mean_of(values), values)


def extraction_strength_of(is_argmax: tuple[bool, ...]) -> float:
    """1 − k/|y|, k the shortest answer prefix after which teacher-forced argmax gives the whole rest."""
    k = len(is_argmax)
    while k > 0 and is_argmax[k - 1]:
        k -= 1
    return 1.0 - k / len(is_argmax)


@metric("extraction_strength", reads="any", version=2)
def extraction_strength(scores: SplitScores) -> MetricResult:
    """Extraction strength: 1 = the whole answer follows from its first token."""
    values = [extraction_strength_of(stats.content().is_argmax) for stats in scores.answer_tokens]
    return MetricResult(mean_of(values), values)
