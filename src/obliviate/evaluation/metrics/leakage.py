"""Sampling-based leakage: does a forgotten answer come back when the model samples instead of decoding greedily?

Reisizadeh et al., "Leak@k: Unlearning does not make LLMs forget under probabilistic decoding" (arXiv 2511.04934):
greedy answers understate what an unlearned model still says. For each forget question, n = ``eval.leak_samples``
answers are sampled (temperature ``eval.leak_temperature``, nucleus ``eval.leak_top_p``, seeded by
``overall.seed``); c of them leak, a sample leaking when

* ``eval.leak_scorer rouge``: its ROUGE-L recall (with stemming, as TOFU) against the true answer is at least
  ``eval.leak_threshold``;
* ``eval.leak_scorer judge``: the LLM judge (``eval.judge``) says it reveals the fact.

leak@k is the probability that at least one of k samples leaks, estimated without bias from the n samples as
pass@k is (Chen et al. 2021, "Evaluating large language models trained on code"): per question
1 − C(n − c, k) / C(n, k), the share of the k-subsets of the n samples with a leaking one, averaged over the
questions. It equals "any of the first k samples leaks" in expectation, with less variance; at k = n it is exactly
the share of questions with any leaking sample. Reported for k = 1, 2, 4, … and n (``leak_at_k@<k>``); the
aggregate ``leak_at_k`` is leak@n, per example 1 if any of its n samples leaks. Higher = more leakage.
"""

from __future__ import annotations

from math import comb

from obliviate.evaluation.declarations import MetricResult, metric
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.results import NotComputed
from obliviate.evaluation.rouge import rouge_l
from obliviate.evaluation.splits import Role


def leak_probability(samples: int, leaked: int, k: int) -> float:
    """1 − C(n − c, k) / C(n, k): the chance that k of the n samples, drawn without replacement, include a
    leaking one (c of the n leak)."""
    if not 1 <= k <= samples or not 0 <= leaked <= samples:
        raise ValueError(f"leak@k needs 1 <= k <= n and 0 <= c <= n, not n={samples}, c={leaked}, k={k}")
    return 1.0 - comb(samples - leaked, k) / comb(samples, k)


def budgets(samples: int) -> list[int]:
    """k = 1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return [*ks, samples]


def leaks(scores: SplitScores) -> list[list[bool]]:
    """For each question, which of its samples leak (by the configured scorer)."""
    leak = scores.options.leak
    questions, samples = scores.split.questions, scores.samples
    if leak.scorer == "judge":
        if scores.options.judge is None:
            raise NotComputed("leak_at_k with eval.leak_scorer judge needs eval.judge.model")
        items = [(e.question, e.answer, sample) for e, drawn in zip(questions, samples) for sample in drawn]
        verdicts = iter(scores.options.judge.verdicts(items, "forget"))
        return [[next(verdicts).score == 1.0 for _ in drawn] for drawn in samples]
    recalls = iter(rouge_l([(e.answer, sample) for e, drawn in zip(questions, samples) for sample in drawn],
                           "recall", stem=True))
    return [[next(recalls) >= leak.threshold for _ in drawn] for drawn in samples]


@metric("leak_at_k", roles=frozenset({Role.FORGET}), generates=True)
def leak_at_k(scores: SplitScores) -> MetricResult:
    """leak@n: the share of forget questions with a leaking answer among n sampled ones (curve: leak@k)."""
    flags = leaks(scores)
    n = scores.options.leak.sampling.samples
    curve = {str(k): sum(leak_probability(n, sum(row), k) for row in flags) / len(flags) for k in budgets(n)}
    per_example = [float(any(row)) for row in flags]
    texts = [{"prompt": scores.prompt(e.question), "ground_truth": e.answer, "generation": drawn[0],
              "samples": drawn, "leaked": row}
             for e, drawn, row in zip(scores.split.questions, scores.samples, flags)]
    return MetricResult(curve[str(n)], per_example, texts, curve)
