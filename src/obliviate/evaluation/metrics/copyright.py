"""Copyright-style scores of text continuations (the WAGLE/SOUL Harry Potter line): the same greedy
continuations as MUSE's VerbMem (:attr:`~obliviate.evaluation.queries.SplitScores.continuations`).

* ``continuation_rouge_l_recall``: ROUGE-L recall (with stemming) against the true continuation;
* ``continuation_bleu``: sacrebleu corpus BLEU (0–100) as the value, sentence BLEU per example.
"""

from __future__ import annotations

import sacrebleu

from obliviate.evaluation.declarations import MetricResult, mean_of, metric
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.rouge import rouge_l


@metric("continuation_rouge_l_recall", reads="text", generates=True)
def continuation_rouge_l_recall(scores: SplitScores) -> MetricResult:
    """ROUGE-L recall (stemming) of the text continuations."""
    values = rouge_l([(c.truth, c.generation) for c in scores.continuations], "recall", stem=True)
    return MetricResult(mean_of(values), values, scores.continuation_texts())


@metric("continuation_bleu", reads="text", generates=True)
def continuation_bleu(scores: SplitScores) -> MetricResult:
    """sacrebleu corpus BLEU of the text continuations (sentence BLEU per example)."""
    truths = [c.truth for c in scores.continuations]
    generated = [c.generation for c in scores.continuations]
    per_example = [sacrebleu.sentence_bleu(g, [t]).score for g, t in zip(generated, truths)]
    return MetricResult(sacrebleu.corpus_bleu(generated, [truths]).score, per_example, scores.continuation_texts())
