"""ROUGE-L with each benchmark's own settings (rouge_score).

TOFU scores with stemming (``RougeScorer(['rouge1', 'rougeL'], use_stemmer=True)`` in its
``evaluate_util.py``); MUSE without (``RougeScorer(..., use_stemmer=False)`` in its ``metrics/logger.py``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from rouge_score import rouge_scorer


@lru_cache(maxsize=2)
def _scorer(stem: bool) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)


def rouge_l(pairs: list[tuple[str, str]], kind: Literal["recall", "fmeasure"], *, stem: bool) -> list[float]:
    """ROUGE-L ``kind`` of each (reference, generated) pair."""
    scorer = _scorer(stem)
    return [getattr(scorer.score(reference, generated)["rougeL"], kind) for reference, generated in pairs]
