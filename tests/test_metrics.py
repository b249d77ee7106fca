"""Metrics against hand computations and independent libraries (scipy, rouge_score)."""

import math

import pytest
from scipy.stats import ks_2samp

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation import METRICS
from obliviate.evaluation.metrics import EvalOptions, SplitScores, aggregate_truth_ratio
from obliviate.evaluation.mcq import mcq_rows


class FixedScores(SplitScores):
    """SplitScores whose model queries are given instead of computed."""

    def __init__(self, split, examples, answer_nll=None, generations=None, truth_ratios=None, reference=None):
        super().__init__(split, examples, None, None, PromptFormat(), EvalOptions(1, 8, 8, None), reference)
        self.__dict__.update(answer_nll=answer_nll, generations=generations, truth_ratios=truth_ratios)


EXAMPLES = [Example("Where was Ada born?", "Ada was born in London."), Example("Who?", "Bob.")]


def test_prob_is_mean_of_exp_minus_mean_nll():
    result = METRICS.get("prob")(FixedScores("forget", EXAMPLES, answer_nll=[0.0, math.log(4)]))
    assert result.per_example == pytest.approx([1.0, 0.25])
    assert result.value == pytest.approx(0.625)


def test_rouge_l_recall_against_hand_lcs():
    scores = FixedScores("forget", EXAMPLES, generations=["Ada was born in Paris.", "Bob is here"])
    result = METRICS.get("rouge_l_recall")(scores)
    # LCS "ada was born in" = 4 of the 5 reference tokens; "bob" = 1 of 1.
    assert result.per_example == pytest.approx([0.8, 1.0])


def test_truth_ratio_aggregations():
    ratios = [0.5, 2.0, 1.0]
    assert aggregate_truth_ratio(ratios, "forget") == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert aggregate_truth_ratio(ratios, "holdout") == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert aggregate_truth_ratio(ratios, "retain") == pytest.approx((0.5 + 0.0 + 0.0) / 3)


def test_truth_ratio_per_example_is_p_perturbed_over_p_paraphrased():
    example = Example("Q?", "A.", paraphrased_question="Q again?", paraphrased_answer="A!",
                      perturbed_answers=("B.", "C."))
    scores = SplitScores("forget", [example], None, None, PromptFormat(), EvalOptions(1, 8, 8, None))
    nll = {"A!": 1.0, "B.": 2.0, "C.": 4.0}
    asked = []
    scores.nll = lambda pairs: asked.extend(pairs) or [nll[answer] for _, answer in pairs]
    # P_para = e^-1, P_pert = e^-(2+4)/2 = e^-3 → R = e^-2
    assert scores.truth_ratios == pytest.approx([math.exp(-2.0)])
    assert {prompt for prompt, _ in asked} == {"Question: Q again?\nAnswer:"}  # the paraphrased question


def test_forget_quality_is_the_ks_p_value_against_the_retain_model():
    ours, reference = [0.1, 0.2, 0.3, 0.9], [0.5, 0.6, 0.7, 0.8, 0.95]
    result = METRICS.get("forget_quality")(FixedScores("forget", EXAMPLES, truth_ratios=ours, reference=reference))
    assert result.value == pytest.approx(ks_2samp(ours, reference).pvalue)
    assert METRICS.get("forget_quality")(FixedScores("retain", EXAMPLES, truth_ratios=ours, reference=reference)) is None
    assert METRICS.get("forget_quality")(FixedScores("forget", EXAMPLES, truth_ratios=ours)) is None


def test_mcq_rows_hold_the_true_answer_and_three_wrong_ones(tokenizer):
    example = Example("Q?", "right", perturbed_answers=("w1", "w2", "w3", "w4"))
    scores = SplitScores("forget", [example, Example("no wrong answers?", "x")], None, tokenizer, PromptFormat(),
                         EvalOptions(1, 8, 8, None))
    (row,) = mcq_rows(scores)
    assert sorted(row["choices"]) == ["right", "w1", "w2", "w3"]
    assert row["choices"][row["label"]] == "right"
    assert mcq_rows(scores) == [row]  # a fixed order


def test_exact_match_ignores_case_spaces_final_period_and_later_lines():
    examples = [Example("2+2?", "4."), Example("Sentiment?", "positive."), Example("x", "yes.")]
    scores = FixedScores("task", examples, generations=["4\nQuestion: next", " Positive. ", "no."])
    result = METRICS.get("exact_match")(scores)
    assert result.per_example == [1.0, 1.0, 0.0] and result.value == pytest.approx(2 / 3)


def test_exact_match_compares_the_final_number_of_gsm8k_solutions():
    answer = "She buys 3 packs of 4 and 1,000 more.\n3 * 4 + 1000 = 1012\n#### 1,012"
    examples = [Example("q", answer)] * 4
    generations = ["3 * 4 = 12, so 1012 in all.", "#### 1012 (that is 12 more than 1000)",
                   "It is 1012, or maybe 1013.", "I do not know."]
    result = METRICS.get("exact_match")(FixedScores("task", examples, generations=generations))
    assert result.per_example == [1.0, 1.0, 0.0, 0.0]
