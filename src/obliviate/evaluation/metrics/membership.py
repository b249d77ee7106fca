"""Membership inference on answers and texts: was this example trained on?

Each attack gives every example a score; sign convention: HIGHER score = MORE likely a member (trained
on); open-unlearning negates the same scores (lower = member) and takes holdout as the positive class, so
its AUCs equal ours. From the teacher-forced statistics of the example's answer (or text):

* ``mia_loss`` (Yeom et al. 2018): −mean NLL over every label, the closing EOS included (open-unlearning
  ``evaluate_probability``);
* ``mia_zlib`` (Carlini et al. 2021): −mean NLL / len(zlib.compress(s)), s the scored span decoded without
  special tokens: both on the same tokens (open-unlearning ``mia/zlib.py`` compresses the decoded labels);
* ``mia_min_k`` (Shi et al. 2024, Min-K% Prob): mean of the lowest k = 40 % of log p(y_t) (floor(k·n), at
  least one token), the closing EOS dropped (open-unlearning ``tokenwise_logprobs``);
* ``mia_min_k_plus_plus`` (Zhang et al. 2024, Min-K%++): the same over (log p(y_t) − μ_t)/σ_t, μ_t and σ_t
  the mean and standard deviation of log p under the model's own next-token distribution;
* ``mia_reference`` (reference-model attack, Carlini et al. 2021): NLL_ref − NLL_model, the retain model
  being the reference.

A split's value is its mean score; ``model.<name>_auc`` is the ROC AUC of forget (positive) against holdout
(registered with each score, see :func:`obliviate.evaluation.declarations.membership_auc`).
"""

from __future__ import annotations

import math
import zlib

from obliviate.evaluation.declarations import MetricResult, mean_of, metric
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.scoring import AnswerTokens
from obliviate.evaluation.splits import Role

MIN_K_FRACTION = 0.4


def lowest_mean(values: tuple[float, ...], fraction: float = MIN_K_FRACTION) -> float:
    """Mean of the lowest floor(fraction·n) values (at least one)."""
    count = max(1, math.floor(fraction * len(values)))
    return sum(sorted(values)[:count]) / count


def _scores(values: list[float]) -> MetricResult:
    return MetricResult(mean_of(values), values)


@metric("mia_loss", reads="any", membership=True)
def loss_score(scores: SplitScores) -> MetricResult:
    """LOSS attack: −mean NLL of the answer (higher = more member-like)."""
    return _scores([-stats.mean_nll for stats in scores.answer_tokens])


def zlib_score(stats: AnswerTokens, text: str) -> float:
    return -stats.mean_nll / len(zlib.compress(text.encode("utf-8")))


@metric("mia_zlib", reads="any", membership=True, version=2)
def zlib_ratio_score(scores: SplitScores) -> MetricResult:
    """zlib attack: −mean NLL / zlib size of the same scored span."""
    return _scores([zlib_score(stats, scores.tokenizer.decode(stats.token_ids, skip_special_tokens=True))
                    for stats in scores.answer_tokens])


@metric("mia_min_k", reads="any", membership=True, version=2)
def min_k_score(scores: SplitScores) -> MetricResult:
    """Min-K% Prob: mean of the lowest 40 % token log-probabilities (closing EOS dropped)."""
    return _scores([lowest_mean(stats.content().log_probs) for stats in scores.answer_tokens])


@metric("mia_min_k_plus_plus", reads="any", membership=True, version=2)
def min_k_plus_plus_score(scores: SplitScores) -> MetricResult:
    """Min-K%++: mean of the lowest 40 % standardised token log-probabilities (closing EOS dropped)."""
    return _scores([lowest_mean(stats.content().standardised) for stats in scores.answer_tokens])


@metric("mia_reference", reads="any", roles=frozenset({Role.FORGET, Role.HOLDOUT}), reference=("prob",),
        membership=True)
def reference_score(scores: SplitScores) -> MetricResult:
    """Reference-model attack: NLL_ref − NLL_model per example, the retain model as the reference."""
    reference = scores.reference_values("prob", "any")
    return _scores([-math.log(max(p_ref, 1e-300)) - stats.mean_nll
                    for stats, p_ref in zip(scores.answer_tokens, reference)])
