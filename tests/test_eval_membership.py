"""Membership scores by hand (sign: higher = member), the EOS and zlib spans as open-unlearning
(src/evals/metrics/utils.py tokenwise_logprobs, mia/zlib.py, mia/min_k.py, mia/min_k_plus_plus.py), AUCs."""

import math
import zlib

import pytest
from evaluation_helpers import FixedScores, tokens

from obliviate.data.examples import Example
from obliviate.evaluation import METRICS, MODEL_METRICS
from obliviate.evaluation.declarations import ModelInputs, NotComputed, membership_auc
from obliviate.evaluation.metrics.membership import lowest_mean
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import Role, Split


def test_membership_scores_signs():
    stats = tokens([-0.1, -2.0, -0.5, -3.0, -0.2], standardised=[1.0, -1.5, 0.2, -2.5, 0.8])
    scores = FixedScores("forget", [Example("q", "a")], answer_tokens=[stats])
    mean_nll = (0.1 + 2.0 + 0.5 + 3.0 + 0.2) / 5
    assert METRICS.get("mia_loss").compute(scores).value == pytest.approx(-mean_nll)  # higher = more member-like
    assert METRICS.get("mia_min_k").compute(scores).value == pytest.approx((-3.0 - 2.0) / 2)  # floor(0.4 * 5) = 2
    assert lowest_mean((-1.0, -4.0)) == -4.0  # at least one token
    assert METRICS.get("mia_min_k_plus_plus").compute(scores).value == pytest.approx((-2.5 - 1.5) / 2)


def test_min_k_drops_the_closing_eos_and_loss_keeps_it():
    # the EOS is the least likely token: Min-K% without it takes the next lowest
    stats = tokens([-0.5, -1.0, -0.2, -0.3, -9.0], standardised=[0.5, -1.0, 0.2, 0.3, -9.0], closing_eos=True)
    scores = FixedScores("forget", [Example("q", "a")], answer_tokens=[stats])
    assert METRICS.get("mia_min_k").compute(scores).value == pytest.approx(-1.0)  # floor(0.4 * 4) = 1 of 4 tokens
    assert METRICS.get("mia_min_k_plus_plus").compute(scores).value == pytest.approx(-1.0)
    assert METRICS.get("mia_loss").compute(scores).value == pytest.approx(-(0.5 + 1.0 + 0.2 + 0.3 + 9.0) / 5)


def test_zlib_compresses_the_same_tokens_the_loss_scores(tokenizer):
    answer = "Ada was born in London in 1815."
    ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    stats = tokens([-1.0] * len(ids), token_ids=ids, closing_eos=True)
    long_text = Example("", answer + " More text the scoring cut at max_length." * 5)
    scores = FixedScores("forget", [long_text], tokenizer=tokenizer, answer_tokens=[stats])
    span = tokenizer.decode(ids, skip_special_tokens=True)
    assert METRICS.get("mia_zlib").compute(scores).value == pytest.approx(-1.0 / len(zlib.compress(span.encode())))


def test_auc_forget_is_the_positive_class():
    # members [0.9, 0.8, 0.3] vs non-members [0.5, 0.1]: 5 of 6 pairs ordered right
    assert membership_auc([0.9, 0.8, 0.3], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert membership_auc([0.1, 0.2], [0.8, 0.9]) == 0.0  # forget looks less familiar than unseen data
    evaluation = Evaluation(per_example={"forget": {"mia_loss": [0.9, 0.8, 0.3]}, "holdout": {"mia_loss": [0.5, 0.1]}})
    splits = [Split("forget", Role.FORGET, (), True), Split("holdout", Role.HOLDOUT, (), True)]
    auc = MODEL_METRICS.get("mia_loss_auc")
    assert auc.triggered_by == {"mia_loss"}  # registered with the score
    assert auc.compute(ModelInputs(splits, evaluation, None)) == pytest.approx(5 / 6)
    with pytest.raises(NotComputed, match="needs a holdout split \\(dataset.holdout_dataset_name is empty\\)"):
        auc.compute(ModelInputs(splits[:1], evaluation, None))


def test_reference_attack_is_the_nll_gap_to_the_retain_model():
    stats = [tokens([-0.5, -1.5]), tokens([-2.0, -2.0])]  # mean NLL 1.0 and 2.0
    reference = Evaluation(per_example={"forget": {"prob": [math.exp(-3.0), math.exp(-1.0)]}})
    scores = FixedScores("forget", [Example("q", "a")] * 2, answer_tokens=stats, reference=reference)
    result = METRICS.get("mia_reference").compute(scores)
    assert result.per_example == pytest.approx([3.0 - 1.0, 1.0 - 2.0])  # NLL_ref - NLL_model: higher = member
    holdout = FixedScores("holdout", [Example("q", "a")] * 2, answer_tokens=stats, reference=reference)
    with pytest.raises(NotComputed, match="needs the retain model's prob on holdout"):
        METRICS.get("mia_reference").compute(holdout)
