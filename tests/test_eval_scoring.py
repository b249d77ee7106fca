"""Teacher-forced answer statistics: hand values, the training loss, shared prompts, the closing EOS."""

import math

import pytest
import torch

from obliviate.data.tokenize import Query, collate, encode
from obliviate.errors import UserError
from obliviate.evaluation import scoring
from obliviate.evaluation.scoring import answer_tokens, position_statistics, separate_statistics
from obliviate.likelihood import forward_logits, sequence_nll, token_nll
from obliviate.models.embedded import tiny_random_llama


def log_softmax(row):
    total = math.log(sum(math.exp(v) for v in row))
    return [v - total for v in row]


def test_position_statistics_against_hand_computation(monkeypatch):
    # one answer of two tokens after its prompt, then a second answer of one token; vocabulary of 3
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    monkeypatch.setattr(scoring, "CHUNK_LOGITS", 6)  # two positions per chunk: the answers straddle a chunk
    stats, second = position_statistics(logits, torch.tensor([2, 0, 0]), [2, 1], [True, False])
    assert second.token_ids == (0,) and second.log_probs == pytest.approx((math.log(1 / 3),), rel=1e-6)
    assert second.is_argmax == (True,) and not second.closing_eos  # ties: the first maximum is the argmax
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
        sums, counts = sequence_nll(*token_nll(forward_logits(model, batch), batch.labels))
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


def test_scored_index_answers_a_request_only_from_the_same_tokens():
    """A request is answered by a scored answer after the same prefix whose tokens begin with the continuation
    (e.g. the answer without its closing EOS); another prefix or other tokens are not answered."""
    from evaluation_helpers import tokens

    from obliviate.evaluation.scoring import ScoredIndex

    index = ScoredIndex()
    scored = tokens([-0.5, -1.0, -0.1], is_argmax=[True, False, True], token_ids=[7, 8, 2], closing_eos=True)
    index.add([1, 2, 3], scored)
    found = index.find([1, 2, 3], [7, 8])
    assert found.token_ids == (7, 8) and found.log_probs == (-0.5, -1.0) and found.is_argmax == (True, False)
    assert not found.closing_eos
    assert index.find([1, 2, 3], [7, 8, 2]) is scored
    assert index.find([1, 2], [7, 8]) is None  # another prefix
    assert index.find([1, 2, 3], [7, 9]) is None  # other tokens
    assert index.find([1, 2, 3], [7, 8, 2, 5]) is None  # longer than anything scored


class ForwardCounter:
    """Counts forward passes of a model (a hook on its top module)."""

    def __init__(self, model):
        self.count = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, inputs):
        self.count += 1


def test_multiple_choice_reads_the_options_the_truth_ratio_scored_and_gives_lm_evals_accuracy(tokenizer, tmp_path):
    """mcq_acc after truth_ratio on the same split runs lm-eval without one forward pass of the model (its four
    choices are the truth ratio's answers), and its accuracy and per-example values are those of lm-eval scoring
    every choice itself."""
    from obliviate.data.sources import load_examples
    from obliviate.data.tokenize import PromptFormat
    from obliviate.evaluation import METRICS
    from obliviate.evaluation.queries import EvalOptions, SplitScores
    from obliviate.evaluation.splits import Role, Split

    examples = load_examples("synthetic:forget05", tmp_path)[:6]
    model = tiny_random_llama(tokenizer).eval()
    options = EvalOptions(batch_size=4, max_length=96, max_new_tokens=4)

    def scores(score_options):
        return SplitScores(Split("forget", Role.FORGET, tuple(examples)), model, tokenizer, PromptFormat(), options,
                           score_options=score_options)

    alone = METRICS.get("mcq_acc").compute(scores(False))
    shared = scores(True)
    METRICS.get("truth_ratio").compute(shared)
    counter = ForwardCounter(model)
    after_truth_ratio = METRICS.get("mcq_acc").compute(shared)
    assert counter.count == 0
    assert after_truth_ratio.per_example == alone.per_example and after_truth_ratio.value == alone.value


def test_answers_and_options_scored_in_one_pass_give_the_same_statistics(tokenizer, tmp_path):
    """With score_options, each prompt runs once for its answer and its options: the answers' statistics are
    those scored alone, and the truth ratio afterwards needs no forward pass."""
    from obliviate.data.sources import load_examples
    from obliviate.data.tokenize import PromptFormat
    from obliviate.evaluation.queries import EvalOptions, SplitScores
    from obliviate.evaluation.splits import Role, Split

    examples = load_examples("synthetic:forget05", tmp_path)[:5]
    model = tiny_random_llama(tokenizer).eval()
    options = EvalOptions(batch_size=3, max_length=96, max_new_tokens=4)
    split = Split("forget", Role.FORGET, tuple(examples))
    alone = SplitScores(split, model, tokenizer, PromptFormat(), options)
    together = SplitScores(split, model, tokenizer, PromptFormat(), options, score_options=True)
    for ours, theirs in zip(together.answer_tokens, alone.answer_tokens):
        assert ours.token_ids == theirs.token_ids and ours.is_argmax == theirs.is_argmax
        assert ours.log_probs == pytest.approx(theirs.log_probs, abs=1e-5)
    expected = alone.truth_ratios
    counter = ForwardCounter(model)
    assert together.truth_ratios == pytest.approx(expected, rel=1e-4)
    assert counter.count == 0
