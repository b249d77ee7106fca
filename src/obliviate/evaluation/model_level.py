"""Numbers about the model rather than one split, computed from the per-split results into ``model``.

* ``model_utility`` (TOFU): the harmonic mean of nine values, {retain, real_authors, world_facts} ×
  {prob (normalised on the two knowledge splits), rouge_l_recall, truth_ratio (max(0, 1 − R))}; present
  when all nine were computed. A harmonic mean, so one collapsed value pulls it down.
* ``forget_quality_log10``: log10 of the forget split's ``forget_quality`` (floored at 1e-300, so a
  p-value that underflows to 0 reads −300), the form TOFU plots.
* ``<score>_auc`` for each membership score computed on forget and holdout: ROC AUC with the FORGET
  examples as the positive class (see :mod:`obliviate.evaluation.membership`).
* ``privleak`` (MUSE), when the retain model's Min-K% AUC is known: (A_model − A_retain) / A_retain × 100
  in MUSE's orientation A = 1 − ``mia_min_k_auc`` (the holdout examples as the positive class). Sign:
  0 = leaks like the retain model; strongly NEGATIVE = under-unlearning (the forget set is still
  recognised; a fine-tuned target reads about −100); strongly POSITIVE = over-unlearning (the forget
  set looks less familiar than unseen data).
"""

from __future__ import annotations

import math
from statistics import harmonic_mean

from obliviate.evaluation.membership import AUC_AGAINST, AUC_SCORES, membership_auc
from obliviate.evaluation.reference import PRIVLEAK_SCORE

MODEL = "model"
UTILITY_SPLITS = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("prob", "rouge_l_recall", "truth_ratio")
FORGET_QUALITY_FLOOR = 1e-300


def model_utility(metrics: dict[str, dict[str, float]]) -> float | None:
    values = [metrics.get(split, {}).get(name) for split in UTILITY_SPLITS for name in UTILITY_METRICS]
    if any(value is None for value in values):
        return None
    return 0.0 if min(values) <= 0 else harmonic_mean(values)


def privleak(model_auc: float, retain_auc: float) -> float | None:
    """MUSE PrivLeak from two forget-positive Min-K% AUCs (see the module docstring for the sign)."""
    muse_model, muse_retain = 1.0 - model_auc, 1.0 - retain_auc
    return None if muse_retain == 0 else (muse_model - muse_retain) / muse_retain * 100.0


def add_model_metrics(metrics: dict[str, dict[str, float]], per_example: dict[str, dict[str, list[float]]],
                      retain_min_k_auc: float | None = None) -> None:
    """Add the ``model`` entry (whatever of the above applies) to an evaluation's metrics."""
    model: dict[str, float] = {}
    if (utility := model_utility(metrics)) is not None:
        model["model_utility"] = utility
    if (quality := metrics.get("forget", {}).get("forget_quality")) is not None:
        model["forget_quality_log10"] = math.log10(max(quality, FORGET_QUALITY_FLOOR))
    forget, negatives = per_example.get("forget", {}), per_example.get(AUC_AGAINST, {})
    for name in AUC_SCORES:
        if name in forget and name in negatives:
            model[f"{name}_auc"] = membership_auc(forget[name], negatives[name])
    if retain_min_k_auc is not None and f"{PRIVLEAK_SCORE}_auc" in model:
        if (leak := privleak(model[f"{PRIVLEAK_SCORE}_auc"], retain_min_k_auc)) is not None:
            model["privleak"] = leak
    if model:
        metrics[MODEL] = model
