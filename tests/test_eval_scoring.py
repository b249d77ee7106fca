"""Teacher-forced answer statistics: hand values, the training loss, shared prompts, the closing EOS."""

import math

import pytest
import torch

from obliviate.data.tokenize import Query, collate, encode
from obliviate.errors import UserError
from obliviate.evaluation.scoring import answer_tokens, separate_statistics, token_statistics
from obliviate.likelihood import forward_logits, sequence_nll
from obliviate.models.embedded import tiny_random_llama


def log_softmax(row):
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def test_token_statistics_against_hand_computation():
    # one row: a prompt token (label -100) then two answer tokens; vocabulary of 3
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[-100, 2, 0]])  # position t's logits predict label t+1
    (stats,) = token_statistics(logits, labels, [True])
    rows = [log_softmax([2.0, 0.0, 0.0]), log_softmax([0.0, 1.0, 3.0])]
    targets = [2, 0]
    assert stats.token_ids == (2, 0)
    assert stats.log_probs == pytest.approx(tuple(r[t] for r, t in zip(rows, targets)), rel=1e-6)
    assert stats.is_argmax == (False, False)  # argmaxes are 0 and 2
    for value, row, target in zip(stats.standardised, rows, targets):
        mu = sum(math.exp(v) * v for v in row)
        sigma = math.sqrt(sum(math.exp(v) * v * v for v in row) - mu * mu)
        assert value == pytest.approx((row[target] - mu) / sigma, rel=1e-5)
    assert stats.mean_nll == pytest.approx(-(rows[0][2] + rows[1][0]) / 2, rel=1e-6)  # every label: EOS included
    content = stats.content()  # without the closing EOS (the last label)
    assert content.token_ids == (2,) and content.log_probs == stats.log_probs[:1] and not content.closing_eos


def test_answer_tokens_give_the_same_mean_nll_as_the_training_loss(tokenizer):
    model = tiny_random_llama(tokenizer)
    queries = [Query("Question: who?\nAnswer:", "Ada Lovelace."), Query("Question: where is it?\nAnswer:", "Far away."),
               Query("", "A plain text passage.", closing_eos=False)]
    stats = answer_tokens(model, tokenizer, queries, 32, 2)
    batch = collate([encode(tokenizer, q, 32) for q in queries], [0, 1, 2], tokenizer.pad_token_id)
    with torch.no_grad():
        sums, counts = sequence_nll(forward_logits(model, batch), batch.labels)
    assert [s.mean_nll for s in stats] == pytest.approx((sums / counts).tolist(), rel=1e-5)
    assert [len(s.log_probs) for s in stats] == counts.int().tolist()
    assert [s.closing_eos for s in stats] == [True, True, False]
    assert stats[0].token_ids[-1] == tokenizer.eos_token_id and stats[2].token_ids[-1] != tokenizer.eos_token_id


def test_answers_sharing_a_prompt_score_as_if_each_ran_alone(tokenizer):
    model = tiny_random_llama(tokenizer)
    queries = [Query(p, a) for p, a in [
        ("Question: who?\nAnswer:", "Ada Lovelace."), ("Question: who?\nAnswer:", "Charles Babbage, of course."),
        ("Question: where was the old bridge built?\nAnswer:", "Far away."),
        ("Question: where was the old bridge built?\nAnswer:", "In a small town by the river."),
        ("Question: where was the old bridge built?\nAnswer:", "Nowhere."), ("Question: alone?\nAnswer:", "Yes.")]]
    shared = answer_tokens(model, tokenizer, queries, 32, 4)
    separate = separate_statistics(model, tokenizer, queries, 32, 1)
    for a, b in zip(shared, separate):
        assert a.is_argmax == b.is_argmax and a.token_ids == b.token_ids and a.closing_eos == b.closing_eos
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-5)
        # /σ amplifies float32 rounding; a value near 0 (x ≈ μ) needs an absolute margin too
        assert a.standardised == pytest.approx(b.standardised, rel=2e-3, abs=1e-3)
    truncated = answer_tokens(model, tokenizer, queries, 14, 4)  # answers cut at max_length, as in training
    alone = separate_statistics(model, tokenizer, queries, 14, 4)
    assert [len(t.log_probs) for t in truncated] == [len(t.log_probs) for t in alone]
    assert [t.closing_eos for t in truncated] == [t.closing_eos for t in alone]
    assert min(len(t.log_probs) for t in truncated) < max(len(t.log_probs) for t in truncated)


def test_an_answer_cut_off_entirely_is_refused_not_scored(tokenizer):
    # a 12-token prompt leaves no room for its answer at max_length 12: its probability would read as 1
    model = tiny_random_llama(tokenizer)
    queries = [Query("Question: where was the old bridge built?\nAnswer:", "Far away.")]
    with pytest.raises(UserError, match="an evaluated prompt has 12 tokens, and dataset.max_length 12 cuts its answer"):
        answer_tokens(model, tokenizer, queries, 12, 4)


def test_lm_eval_requests_with_shared_contexts_score_as_lm_evals_own_model(tokenizer):
    """SharedContextLM runs each context once; lm-eval's HFLM runs context + continuation whole per request. Same
    log-likelihoods and greedy flags, in request order: contexts shared by several choices, a context ending in
    a space (lm-eval moves it to the continuation), an empty context (the prefix token), a one-token choice."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from obliviate.evaluation.lm_eval_model import SharedContextLM

    model = tiny_random_llama(tokenizer).eval()
    pairs = [("Question: Who bakes?\nAnswer:", f" {name} bakes bread.") for name in ("Ana", "Bo", "Cy", "Di")]
    pairs += [("The river runs ", "north"), ("", "A whole text with no context."), ("Pick one: A or B?", " A"),
              ("Question: Who bakes?\nAnswer:", " Ed")]
    requests = [Instance("loglikelihood", {}, pair, index) for index, pair in enumerate(pairs)]
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3).loglikelihood(requests)
    ours = SharedContextLM(pretrained=model, tokenizer=tokenizer, batch_size=3).loglikelihood(requests)
    assert [greedy for _, greedy in ours] == [greedy for _, greedy in theirs]
    assert [value for value, _ in ours] == pytest.approx([value for value, _ in theirs], abs=1e-4)
    assert len({value for value, _ in ours}) == len(pairs)  # distinct requests, not one value repeated
