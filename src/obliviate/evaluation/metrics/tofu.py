"""TOFU's metrics (Maini et al. 2024, arXiv 2401.06121; reference code locuslab/tofu ``evaluate_util.py`` and
``aggregate_eval_stat.py``, and open-unlearning ``src/evals/metrics/memorization.py``).

* ``prob``: p(a|q) = exp(−mean NLL of the answer tokens and the closing EOS), prompt masked; on knowledge
  splits the normalised form p_true / (p_true + Σ p_wrong) over the example's options.
* ``rouge_l_recall``: ROUGE-L recall (stemming, as TOFU) of the greedy answer against the answer.
* ``truth_ratio``: per example R = P_perturbed / P_base after the ORIGINAL question (see
  :attr:`~obliviate.evaluation.queries.SplitScores.truth_ratios`); aggregated as TOFU: on forget and
  holdout ``mean(min(R, 1/R))`` (closer to 1 = the model cannot tell true from false), elsewhere
  ``mean(max(0, 1 − R))`` (higher = the true answer is preferred). TOFU's code stores 1/R and inverts
  it in the aggregation; open-unlearning stores R (wrong / correct), as per_example.json does.
* ``forget_quality``: p-value of the two-sample Kolmogorov–Smirnov test (scipy.stats.ks_2samp) between this
  model's per-example forget R and the RETAIN model's (high = indistinguishable from a model that never
  saw the forget set).
* model level: ``model_utility``, the harmonic mean of the nine {retain, real_authors, world_facts} ×
  {prob, rouge_l_recall, truth_ratio} values; ``forget_quality_log10`` (floored at 1e-300).
"""

from __future__ import annotations

import math
from statistics import harmonic_mean

from scipy.stats import ks_2samp

from obliviate.evaluation.declarations import MetricResult, ModelInputs, NotComputed, mean_of, metric, model_metric
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.rouge import rouge_l
from obliviate.evaluation.splits import ALL_ROLES, Role

CLOSER_TO_ONE = frozenset({Role.FORGET, Role.HOLDOUT})  # truth ratio aggregated as mean(min(R, 1/R))
FORGET_QUALITY_FLOOR = 1e-300
UTILITY_METRICS = ("prob", "rouge_l_recall", "truth_ratio")


@metric("prob", reads="any", version=2, options_on=frozenset({Role.KNOWLEDGE}))
def answer_probability(scores: SplitScores) -> MetricResult:
    """exp(−mean answer NLL); on knowledge splits TOFU's normalised form over the options."""
    probabilities: list[float | None] = [math.exp(-stats.mean_nll) for stats in scores.answer_tokens]
    if scores.split.role is Role.KNOWLEDGE:
        probabilities = normalised_probabilities(scores)
    return MetricResult(mean_of(probabilities), probabilities)


def normalised_probabilities(scores: SplitScores) -> list[float | None]:
    """p_true / (p_true + Σ p_wrong), each p = exp(−mean NLL) of the option after the question; None for an
    example without wrong options."""
    if not any(e.perturbed_answers for e in scores.examples):
        raise NotComputed(f"prob on the knowledge split {scores.split.name} is normalised over the options, and no "
                          "record has perturbed_answer")
    wrong = iter(scores.nll([query for e in scores.examples for query in scores.option_queries(e)[1:]]))
    true_nlls = [stats.mean_nll for stats in scores.answer_tokens]
    return [option_share(nll, [next(wrong) for _ in e.perturbed_answers]) if e.perturbed_answers else None
            for nll, e in zip(true_nlls, scores.examples)]


def option_share(true_nll: float, wrong_nlls: list[float]) -> float:
    """p_true / (p_true + Σ p_wrong) with p = exp(−mean NLL), computed as a softmax (no 0/0 when every
    option's probability underflows)."""
    logits = [-true_nll, *(-nll for nll in wrong_nlls)]
    top = max(logits)
    return math.exp(logits[0] - top) / sum(math.exp(value - top) for value in logits)


@metric("rouge_l_recall", generates=True)
def rouge_l_recall(scores: SplitScores) -> MetricResult:
    """ROUGE-L recall (with stemming, as TOFU) of the greedy answer against the true answer."""
    values = rouge_l([(e.answer, generated) for e, generated in scores.answers], "recall", stem=True)
    return MetricResult(mean_of(values), values, scores.answer_texts())


def aggregate_truth_ratio(ratios: list[float | None], role: Role) -> float:
    """TOFU's aggregation: mean(min(R, 1/R)) on forget/holdout, mean(max(0, 1 − R)) otherwise."""
    if role in CLOSER_TO_ONE:
        return mean_of([None if r is None else min(r, 1.0 / r) for r in ratios])
    return mean_of([None if r is None else max(0.0, 1.0 - r) for r in ratios])


@metric("truth_ratio", knowledge_up=ALL_ROLES - CLOSER_TO_ONE, version=2, options_on=ALL_ROLES)
def truth_ratio(scores: SplitScores) -> MetricResult:
    """R = P_perturbed / P_base per example (after the original question), aggregated as TOFU by role."""
    ratios = scores.truth_ratios
    return MetricResult(aggregate_truth_ratio(ratios, scores.split.role), ratios)


@metric("forget_quality", roles=frozenset({Role.FORGET}), reference=("truth_ratio",), knowledge_up=frozenset(),
        version=2, options_on=frozenset({Role.FORGET}))
def forget_quality(scores: SplitScores) -> MetricResult:
    """KS-test p-value between this model's and the retain model's per-example forget truth ratios."""
    ours = [r for r in scores.truth_ratios if r is not None]
    reference = [r for r in scores.reference_values("truth_ratio", "qa") if r is not None]
    return MetricResult(float(ks_2samp(ours, reference).pvalue), [])


@model_metric("model_utility", triggered_by=set(UTILITY_METRICS), version=2)
def model_utility(inputs: ModelInputs) -> float:
    """TOFU's model utility: harmonic mean of {retain, real_authors, world_facts} × {prob, ROUGE-L recall, TR}."""
    splits = [inputs.one_primary(Role.RETAIN, "dataset.retain_dataset_name")]
    knowledge = {split.name: split for split in inputs.primary(Role.KNOWLEDGE)}
    for name in ("real_authors", "world_facts"):
        if name not in knowledge:
            raise NotComputed(f"needs the {name} split (dataset.{name}_dataset_name is empty)")
        splits.append(knowledge[name])
    values = [inputs.value(split, name) for split in splits for name in UTILITY_METRICS]
    return 0.0 if min(values) <= 0 else harmonic_mean(values)


@model_metric("forget_quality_log10", triggered_by={"forget_quality"})
def forget_quality_log10(inputs: ModelInputs) -> float:
    """log10 of the forget split's forget quality (floored at 1e-300), the form TOFU plots."""
    quality = inputs.value(inputs.one_primary(Role.FORGET, "dataset.forget_dataset_name"), "forget_quality")
    return math.log10(max(quality, FORGET_QUALITY_FLOOR))
