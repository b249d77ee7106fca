"""Exact memorisation and extraction strength by hand, over the answer without its closing EOS
(locuslab/open-unlearning src/evals/metrics/memorization.py over tokenwise_vocab_logprobs, which drops it)."""

import pytest
from evaluation_helpers import FixedScores, tokens

from obliviate.data.examples import Example
from obliviate.evaluation import METRICS


def test_exact_memorization_and_extraction_strength():
    cases = [tokens([-1.0] * 5, [True, True, False, True, True]), tokens([-1.0] * 4, [True] * 4),
             tokens([-1.0] * 4, [True, True, True, False])]
    scores = FixedScores("forget", [Example("q", "a")] * 3, answer_tokens=cases)
    em = METRICS.get("exact_memorization").compute(scores)
    assert em.per_example == pytest.approx([0.8, 1.0, 0.75])
    es = METRICS.get("extraction_strength").compute(scores)
    # k = shortest prefix after which the argmax reproduces the rest: 3 of 5, 0 of 4, 4 of 4
    assert es.per_example == pytest.approx([1 - 3 / 5, 1.0, 0.0]) and es.value == pytest.approx((0.4 + 1.0) / 3)


def test_the_closing_eos_is_not_counted():
    # the last token is the appended EOS, mispredicted: without it the answer is fully memorised
    stats = tokens([-1.0] * 4, [True, True, True, False], closing_eos=True)
    scores = FixedScores("forget", [Example("q", "a")], answer_tokens=[stats])
    assert METRICS.get("exact_memorization").compute(scores).value == 1.0
    assert METRICS.get("extraction_strength").compute(scores).value == 1.0
    text = tokens([-1.0] * 4, [True, True, True, False])  # a text's last token is real text: it counts
    texts = FixedScores("forget", [Example("", "a")], answer_tokens=[text])
    assert METRICS.get("exact_memorization").compute(texts).value == 0.75
