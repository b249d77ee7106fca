"""Per-split metrics, registered by name (the names used in ``eval.metrics`` and in metrics.json).

All metrics are "higher is more knowledge" except as noted; each returns the aggregate and the
per-example values (so anyone can recompute the aggregate).

* ``prob``: mean over examples of p(a|q) = exp(−mean NLL of the answer tokens and the closing EOS),
  prompt masked (TOFU). On the real-world knowledge splits (``real_authors``, ``world_facts``) TOFU's
  normalised form p_true / (p_true + Σ p_wrong) over the example's options (true + perturbed answers).
* ``rouge_l_recall``: ROUGE-L recall (rouge_score, stemming) of the greedy answer against the true
  answer (TOFU reports recall).
* ``truth_ratio``: per example R = P_perturbed / P_paraphrased on the paraphrased question (falls back to
  the question), P = exp(−mean answer NLL), P_perturbed = exp(−mean_j NLL(perturbed_j)). Aggregated as
  TOFU does: on forget and holdout ``mean(min(R, 1/R))`` (closer to 1 is better: the model cannot tell
  true from false), on the other splits (retain, real_authors, world_facts) ``mean(max(0, 1 − R))``
  (higher is better: the true answer is preferred).
* ``forget_quality``: forget split only: p-value of the two-sample Kolmogorov–Smirnov test between this
  model's per-example forget R and the retain model's (scipy.stats.ks_2samp). High = indistinguishable
  from a model that never saw the forget set.
* ``rouge_l_f1``: ROUGE-L F1 of the greedy answer (MUSE's KnowMem on QA splits).
* ``verbmem``: on text splits, ROUGE-L F1 between the greedy continuation of a text's prefix and its
  true continuation (MUSE's VerbMem; prefix min(32 tokens, half), continuation up to 128 tokens).
* ``continuation_rouge_l_recall``, ``continuation_bleu``: the copyright-style scores of those text
  continuations (ROUGE-L recall; sacrebleu corpus BLEU on a 0–100 scale, sentence BLEU per example).
* ``semantic_match``: cosine similarity of sentence embeddings of the greedy and the true answer
  (all-MiniLM-L6-v2; see :mod:`obliviate.evaluation.semantic`).
* ``exact_match``: fraction of greedy answers whose first line equals the true answer (case, spaces and
  final punctuation ignored): the accuracy of a downstream task with short answers. When the true
  answer is a GSM8K solution ending in ``#### <number>``, the number is compared with the generation's
  own ``####`` number, or else the last number it writes (commas ignored).
* ``exact_memorization``: fraction of answer tokens equal to the teacher-forced argmax; ``extraction_strength``:
  1 − k/|y| with k the shortest answer prefix after which the argmax reproduces the rest (1 = extracted).
* ``mia_loss``, ``mia_zlib``, ``mia_min_k``, ``mia_min_k_plus_plus``: membership scores of each answer
  (higher = more likely trained on; see :mod:`obliviate.evaluation.membership`); their forget-vs-holdout
  AUCs, TOFU's model utility and log10 forget quality are model-level (:mod:`obliviate.evaluation.model_level`).
* ``mcq_acc``: accuracy on the four-way multiple-choice form (true + perturbed answers), computed by
  lm-eval on the in-process model (see :mod:`obliviate.evaluation.mcq`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import sacrebleu
from rouge_score import rouge_scorer
from scipy.stats import ks_2samp
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation.reference import RetainReference
from obliviate.evaluation.scoring import AnswerTokens, answer_tokens, greedy_answers
from obliviate.registry import Registry

TRUTH_RATIO_CLOSER_TO_ONE = {"forget", "holdout"}
NORMALISED_PROB_SPLITS = {"real_authors", "world_facts"}
VERBMEM_PREFIX_TOKENS, VERBMEM_NEW_TOKENS = 32, 128
DEFAULT_METRICS = ["prob", "rouge_l_recall", "truth_ratio", "forget_quality", "mcq_acc"]


@dataclass
class MetricResult:
    value: float
    per_example: list[float]


@dataclass
class EvalOptions:
    batch_size: int
    max_length: int
    max_new_tokens: int
    work_dir: Path  # where derived evaluation files (e.g. MCQ JSONL for lm-eval) are written
    lm_eval_tasks: tuple[str, ...] = ()  # lm-eval's own tasks, evaluated once per model (not per split)
    task_limit: int = 0  # questions per lm-eval task (0 = all)


class SplitScores:
    """Model queries for one split, computed on first use and shared by the metrics that need them."""

    def __init__(self, split: str, examples: list[Example], model: PreTrainedModel,
                 tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, options: EvalOptions,
                 reference: RetainReference | None = None) -> None:
        self.split, self.examples = split, examples
        self.model, self.tokenizer, self.fmt, self.options = model, tokenizer, fmt, options
        self.reference = reference or RetainReference()

    def prompt(self, question: str) -> str:
        return self.fmt.prompt(self.tokenizer, question)

    def tokens(self, pairs: list[tuple[str, str]]) -> list[AnswerTokens]:
        return answer_tokens(self.model, self.tokenizer, pairs, self.options.max_length, self.options.batch_size)

    def nll(self, pairs: list[tuple[str, str]]) -> list[float]:
        return [stats.mean_nll for stats in self.tokens(pairs)]

    @cached_property
    def answer_tokens(self) -> list[AnswerTokens]:
        """Teacher-forced token statistics of each example's own answer (one forward pass, shared)."""
        return self.tokens([("" if e.is_text else self.prompt(e.question), e.answer) for e in self.examples])

    @cached_property
    def answer_nll(self) -> list[float]:
        return [stats.mean_nll for stats in self.answer_tokens]

    @cached_property
    def qa_examples(self) -> list[Example]:
        """The question/answer examples (text examples have no question to answer)."""
        return [e for e in self.examples if not e.is_text]

    @cached_property
    def generations(self) -> list[str]:
        """Greedy answers to the questions of :attr:`qa_examples`."""
        return greedy_answers(self.model, self.tokenizer, [self.prompt(e.question) for e in self.qa_examples],
                              self.options.max_new_tokens, self.options.batch_size)

    def answered(self) -> list[tuple[Example, str]] | None:
        """(example, greedy answer) of each question; None on a text-only split."""
        return list(zip(self.qa_examples, self.generations)) if self.qa_examples else None

    @cached_property
    def continuations(self) -> list[tuple[str, str, str]] | None:
        """(prefix, true continuation, greedy continuation) of each text example; None without texts.

        The prefix is the first min(32, half) tokens; the truth is the next (up to) 128 tokens, as in
        MUSE; the model generates as many tokens as the longest truth of its batch needs (at most 128)."""
        texts = [e.answer for e in self.examples if e.is_text]
        if not texts:
            return None
        prefixes, truths, budget = [], [], 1
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            cut = min(VERBMEM_PREFIX_TOKENS, len(ids) // 2)
            rest = ids[cut:cut + VERBMEM_NEW_TOKENS]
            prefixes.append(self.tokenizer.decode(ids[:cut]))
            truths.append(self.tokenizer.decode(rest))
            budget = max(budget, len(rest))
        generated = greedy_answers(self.model, self.tokenizer, prefixes, budget, self.options.batch_size)
        return list(zip(prefixes, truths, generated))

    @cached_property
    def truth_ratios(self) -> list[float] | None:
        usable = [e for e in self.examples if e.paraphrased_answer and e.perturbed_answers]
        if not usable:
            return None
        pairs = []
        for example in usable:
            prompt = self.prompt(example.paraphrased_question or example.question)
            pairs += [(prompt, answer) for answer in (example.paraphrased_answer, *example.perturbed_answers)]
        values = iter(self.nll(pairs))
        ratios = []
        for example in usable:
            paraphrased = next(values)
            perturbed = [next(values) for _ in example.perturbed_answers]
            ratios.append(math.exp(paraphrased - sum(perturbed) / len(perturbed)))
        return ratios


Metric = Callable[[SplitScores], MetricResult | None]
METRICS: Registry[Metric] = Registry("metric")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@METRICS.register("prob")
def answer_probability(scores: SplitScores) -> MetricResult:
    """exp(−mean answer NLL); on real-world knowledge splits TOFU's normalised form over the options."""
    probabilities = [math.exp(-nll) for nll in scores.answer_nll]
    if scores.split in NORMALISED_PROB_SPLITS:
        probabilities = normalised_probabilities(scores, probabilities)
    return MetricResult(_mean(probabilities), probabilities)


def normalised_probabilities(scores: SplitScores, probabilities: list[float]) -> list[float]:
    """p_true / (p_true + Σ p_wrong), each p = exp(−mean NLL) of the option given the original question."""
    pairs = [(scores.prompt(e.question), wrong) for e in scores.examples for wrong in e.perturbed_answers]
    wrong = iter(math.exp(-nll) for nll in scores.nll(pairs))
    return [p / (p + sum(next(wrong) for _ in e.perturbed_answers)) for p, e in zip(probabilities, scores.examples)]


def rouge_l(pairs: list[tuple[str, str]], kind: str) -> MetricResult:
    """ROUGE-L (rouge_score, stemming) ``kind`` ('recall' or 'fmeasure') of each (reference, generated)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    values = [getattr(scorer.score(reference, generated)["rougeL"], kind) for reference, generated in pairs]
    return MetricResult(_mean(values), values)


def _answer_rouge(scores: SplitScores, kind: str) -> MetricResult | None:
    answered = scores.answered()
    return None if answered is None else rouge_l([(e.answer, generated) for e, generated in answered], kind)


def _continuation_rouge(scores: SplitScores, kind: str) -> MetricResult | None:
    if scores.continuations is None:
        return None
    return rouge_l([(truth, generated) for _, truth, generated in scores.continuations], kind)


@METRICS.register("rouge_l_recall")
def rouge_l_recall(scores: SplitScores) -> MetricResult | None:
    """TOFU: ROUGE-L recall of the greedy answer against the true answer (QA splits)."""
    return _answer_rouge(scores, "recall")


@METRICS.register("rouge_l_f1")
def rouge_l_f1(scores: SplitScores) -> MetricResult | None:
    """MUSE's KnowMem form: ROUGE-L F1 of the greedy answer against the true answer (QA splits)."""
    return _answer_rouge(scores, "fmeasure")


@METRICS.register("verbmem")
def verbatim_memorisation(scores: SplitScores) -> MetricResult | None:
    """MUSE VerbMem: ROUGE-L F1 of the greedy continuation of each text's prefix against the true
    continuation (text splits only)."""
    return _continuation_rouge(scores, "fmeasure")


@METRICS.register("continuation_rouge_l_recall")
def continuation_rouge_l_recall(scores: SplitScores) -> MetricResult | None:
    """Copyright-style (WAGLE/SOUL Harry Potter line): ROUGE-L recall of the text continuations."""
    return _continuation_rouge(scores, "recall")


@METRICS.register("continuation_bleu")
def continuation_bleu(scores: SplitScores) -> MetricResult | None:
    """Copyright-style BLEU of the text continuations: sacrebleu corpus BLEU (0–100) as the value,
    sentence BLEU per example."""
    if scores.continuations is None:
        return None
    truths = [truth for _, truth, _ in scores.continuations]
    generated = [text for _, _, text in scores.continuations]
    per_example = [sacrebleu.sentence_bleu(g, [t]).score for g, t in zip(generated, truths)]
    return MetricResult(sacrebleu.corpus_bleu(generated, [truths]).score, per_example)


def _normalise(text: str) -> str:
    return " ".join(text.strip().splitlines()[0].lower().split()).rstrip(".!") if text.strip() else ""


FINAL_ANSWER_MARK = "####"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _final_number(text: str) -> str:
    """The number after the last ``####``, or else the last number in ``text`` ('' if none)."""
    tail = text.rsplit(FINAL_ANSWER_MARK, 1)[1] if FINAL_ANSWER_MARK in text else text
    numbers = _NUMBER.findall(tail)
    return (numbers[0] if FINAL_ANSWER_MARK in text else numbers[-1]).replace(",", "") if numbers else ""


def answers_match(generated: str, answer: str) -> bool:
    if FINAL_ANSWER_MARK in answer:
        return _final_number(generated) == _final_number(answer) != ""
    return _normalise(generated) == _normalise(answer)


@METRICS.register("exact_match")
def exact_match(scores: SplitScores) -> MetricResult | None:
    if (answered := scores.answered()) is None:
        return None
    matches = [float(answers_match(generated, e.answer)) for e, generated in answered]
    return MetricResult(_mean(matches), matches)


@METRICS.register("exact_memorization")
def exact_memorization(scores: SplitScores) -> MetricResult:
    """Fraction of answer tokens that are the teacher-forced argmax (Tirumala et al. 2022)."""
    values = [_mean([float(hit) for hit in stats.is_argmax]) for stats in scores.answer_tokens]
    return MetricResult(_mean(values), values)


def extraction_strength_of(is_argmax: tuple[bool, ...]) -> float:
    """1 − k/|y|, k the shortest answer prefix after which teacher-forced argmax gives the whole rest."""
    k = len(is_argmax)
    while k > 0 and is_argmax[k - 1]:
        k -= 1
    return 1.0 - k / len(is_argmax)


@METRICS.register("extraction_strength")
def extraction_strength(scores: SplitScores) -> MetricResult:
    """Extraction strength (Carlini et al. 2021, as in open-unlearning): 1 = the whole answer is extracted."""
    values = [extraction_strength_of(stats.is_argmax) for stats in scores.answer_tokens]
    return MetricResult(_mean(values), values)


def aggregate_truth_ratio(ratios: list[float], split: str) -> float:
    """TOFU's aggregation: mean(min(R, 1/R)) on forget/holdout, mean(max(0, 1 − R)) otherwise."""
    if split in TRUTH_RATIO_CLOSER_TO_ONE:
        return _mean([min(r, 1.0 / r) for r in ratios])
    return _mean([max(0.0, 1.0 - r) for r in ratios])


@METRICS.register("truth_ratio")
def truth_ratio(scores: SplitScores) -> MetricResult | None:
    ratios = scores.truth_ratios
    return None if ratios is None else MetricResult(aggregate_truth_ratio(ratios, scores.split), ratios)


@METRICS.register("forget_quality")
def forget_quality(scores: SplitScores) -> MetricResult | None:
    reference = scores.reference.truth_ratios
    if scores.split != "forget" or reference is None or scores.truth_ratios is None:
        return None
    return MetricResult(float(ks_2samp(scores.truth_ratios, reference).pvalue), [])
