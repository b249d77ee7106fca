"""Membership inference on answers: was this example trained on?

Each attack gives every example a score; sign convention: HIGHER score = MORE likely a member (trained
on). From the answer tokens' teacher-forced log-probabilities log p(y_t):

* ``mia_loss`` (Yeom et al. 2018): −mean NLL = mean_t log p(y_t);
* ``mia_zlib`` (Carlini et al. 2021): −mean NLL / len(zlib.compress(answer as UTF-8)): the loss relative
  to the answer's own compressibility;
* ``mia_min_k`` (Shi et al. 2024, Min-K% Prob): mean of the lowest k = 40 % of log p(y_t) (at least one
  token; the count is floor(k·|y|));
* ``mia_min_k_plus_plus`` (Zhang et al. 2024, Min-K%++): the same over (log p(y_t) − μ_t)/σ_t, μ_t and σ_t
  the mean and standard deviation of log p under the model's own next-token distribution;
* ``mia_reference`` (reference-model attack, Carlini et al. 2021): NLL_ref − NLL_model, the retain model
  being the reference (its forget and holdout probabilities come with the retain reference).

A split's value is its mean score. ``model.<name>_auc`` (see :mod:`obliviate.evaluation.model_level`)
is the ROC AUC (sklearn) of the scores with the FORGET examples as the positive class against the
holdout examples: 1 = forget examples
are recognised as trained on, 0.5 = indistinguishable from never-seen data (the aim of unlearning),
below 0.5 = the forget set looks less familiar than unseen data (over-unlearning).
"""

from __future__ import annotations

import math
import zlib

from sklearn.metrics import roc_auc_score

from obliviate.data.examples import Example
from obliviate.evaluation.metrics import METRICS, MetricResult, SplitScores
from obliviate.evaluation.reference import REFERENCE_ATTACK
from obliviate.evaluation.scoring import AnswerTokens

MIN_K_FRACTION = 0.4
AUC_AGAINST = "holdout"  # the negative class of every membership AUC (the forget split is positive)


def lowest_mean(values: tuple[float, ...], fraction: float = MIN_K_FRACTION) -> float:
    """Mean of the lowest floor(fraction·n) values (at least one)."""
    count = max(1, math.floor(fraction * len(values)))
    return sum(sorted(values)[:count]) / count


def loss_score(stats: AnswerTokens, example: Example) -> float:
    return -stats.mean_nll


def zlib_score(stats: AnswerTokens, example: Example) -> float:
    return -stats.mean_nll / len(zlib.compress(example.answer.encode("utf-8")))


def min_k_score(stats: AnswerTokens, example: Example) -> float:
    return lowest_mean(stats.log_probs)


def min_k_plus_plus_score(stats: AnswerTokens, example: Example) -> float:
    return lowest_mean(stats.standardised)


MEMBERSHIP_SCORES = {"mia_loss": loss_score, "mia_zlib": zlib_score, "mia_min_k": min_k_score,
                     "mia_min_k_plus_plus": min_k_plus_plus_score}


def _register(name: str) -> None:
    score = MEMBERSHIP_SCORES[name]

    @METRICS.register(name)
    def membership(scores: SplitScores) -> MetricResult:
        values = [score(stats, example) for stats, example in zip(scores.answer_tokens, scores.examples)]
        return MetricResult(sum(values) / len(values), values)


for _name in MEMBERSHIP_SCORES:
    _register(_name)


@METRICS.register(REFERENCE_ATTACK)
def reference_score(scores: SplitScores) -> MetricResult | None:
    """Reference-model attack: log p_model(a|q) − log p_ref(a|q) = NLL_ref − NLL_model per example, the
    reference being the retain model; None when its probabilities for this split are not known."""
    reference = scores.reference.answer_probs.get(scores.split)
    if reference is None or len(reference) != len(scores.examples):
        return None
    values = [-math.log(max(p_ref, 1e-300)) - stats.mean_nll for stats, p_ref in zip(scores.answer_tokens, reference)]
    return MetricResult(sum(values) / len(values), values)


AUC_SCORES = (*MEMBERSHIP_SCORES, REFERENCE_ATTACK)


def membership_auc(members: list[float], non_members: list[float]) -> float:
    """ROC AUC of the scores, members (the forget split) as the positive class."""
    return float(roc_auc_score([1] * len(members) + [0] * len(non_members), members + non_members))
