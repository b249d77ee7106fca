"""leak@k (Reisizadeh et al. 2025): sampled answers scored per question, the unbiased estimator over k-subsets."""

from math import comb

import pytest
from evaluation_helpers import FixedScores

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation.evaluator import evaluate
from obliviate.evaluation.metrics.leakage import budgets, leak_at_k, leak_probability
from obliviate.evaluation.queries import EvalOptions, LeakOptions
from obliviate.evaluation.scoring import Sampling, sampled_answers
from obliviate.evaluation.splits import Role, Split
from obliviate.models.embedded import tiny_random_llama


def leak_options(samples=4, threshold=0.5):
    return LeakOptions(sampling=Sampling(samples=samples, temperature=1.0, top_p=1.0, seed=0), scorer="rouge",
                       threshold=threshold)


def test_leak_probability_is_the_share_of_k_subsets_with_a_leak():
    # n = 4 samples, c = 1 leaks: of the C(4,2) = 6 pairs, the 3 that hold the leaking sample
    assert leak_probability(4, 1, 2) == pytest.approx(3 / 6)
    assert leak_probability(4, 1, 1) == pytest.approx(1 / 4)
    assert leak_probability(4, 0, 4) == 0.0 and leak_probability(4, 1, 4) == 1.0
    assert leak_probability(4, 3, 2) == 1.0  # only one non-leaking sample: every pair has a leak
    assert leak_probability(5, 2, 3) == pytest.approx(1 - comb(3, 3) / comb(5, 3))
    with pytest.raises(ValueError):
        leak_probability(4, 1, 5)
    assert budgets(16) == [1, 2, 4, 8, 16] and budgets(6) == [1, 2, 4, 6] and budgets(1) == [1]


def test_leak_at_k_counts_leaking_samples_per_question():
    examples = [Example("Where was Ada born?", "Oslo."), Example("What does Ada do?", "She is a pilot.")]
    samples = [["Oslo.", "Bergen.", "I don't know.", "Paris."],  # 1 of 4 leaks (recall 1)
               ["a pilot", "nurse", "pilot she is", "no idea"]]  # recall 2/3, 0, 2/3 ("she", "pilot"), 0
    options = EvalOptions(batch_size=2, max_length=64, max_new_tokens=8, leak=leak_options())
    scores = FixedScores("forget", examples, Role.FORGET, options=options, samples=samples,
                         tokenizer=_NoTokenizer())
    result = leak_at_k(scores)
    assert result.per_example == [1.0, 1.0]
    assert result.curve == pytest.approx({"1": (1 / 4 + 2 / 4) / 2, "2": (3 / 6 + 5 / 6) / 2, "4": 1.0})
    assert result.value == 1.0 and result.texts[1]["leaked"] == [True, False, True, False]
    strict = FixedScores("forget", examples, Role.FORGET, samples=samples, tokenizer=_NoTokenizer(),
                         options=EvalOptions(batch_size=2, max_length=64, max_new_tokens=8,
                                             leak=leak_options(threshold=0.9)))
    assert leak_at_k(strict).per_example == [1.0, 0.0]


class _NoTokenizer:
    def apply_chat_template(self, *args, **kwargs):  # never used: PromptFormat() is the plain template
        raise AssertionError


def test_sampling_is_seeded(tokenizer):
    model = tiny_random_llama(tokenizer)
    prompts = ["Question: Where was Ada born?\nAnswer:", "Question: Hi?\nAnswer:", "Question: What is 2+2?\nAnswer:"]
    sampling = Sampling(samples=3, temperature=1.0, top_p=0.9, seed=5)
    first = sampled_answers(model, tokenizer, prompts, 6, 8, sampling)
    assert [len(row) for row in first] == [3, 3, 3]
    assert sampled_answers(model, tokenizer, prompts, 6, 8, sampling) == first
    assert len({answer for row in first for answer in row}) > 3  # random weights, sampled: not one answer repeated
    other_seed = sampled_answers(model, tokenizer, prompts, 6, 8, Sampling(samples=3, temperature=1.0, top_p=0.9,
                                                                          seed=6))
    assert other_seed != first


def test_leak_at_k_through_the_evaluator(tokenizer, tmp_path):
    model = tiny_random_llama(tokenizer)
    forget = Split("forget", Role.FORGET, (Example("Where was Ada born?", "Oslo."), Example("Hi?", "Hello.")), True)
    options = EvalOptions(batch_size=2, max_length=64, max_new_tokens=4, leak=leak_options(4))
    evaluation = evaluate(model, tokenizer, [forget], PromptFormat(), options, ["leak_at_k"])
    values = evaluation.splits["forget"]
    assert set(values) == {"leak_at_k", "leak_at_k@1", "leak_at_k@2", "leak_at_k@4"}
    assert values["leak_at_k@1"] <= values["leak_at_k@2"] <= values["leak_at_k@4"] == values["leak_at_k"]
    samples = evaluation.generations["forget"]["leak_at_k"]
    assert [len(row["samples"]) for row in samples] == [4, 4]


def test_nucleus_sample_draws_from_the_smallest_set_reaching_top_p():
    import torch

    from obliviate.models.logit_difference import nucleus_sample

    logits = torch.tensor([[0.5, 0.3, 0.2]]).log().repeat(400, 1)
    torch.manual_seed(0)
    assert set(nucleus_sample(logits, 1.0, 0.5).tolist()) == {0}
    assert set(nucleus_sample(logits, 1.0, 0.8).tolist()) == {0, 1}
    assert set(nucleus_sample(logits, 1.0, 1.0).tolist()) == {0, 1, 2}
    assert set(nucleus_sample(logits, 1e-3, 1.0).tolist()) == {0}  # a cold temperature is greedy


def test_leak_at_k_with_the_judge_asks_it_once_per_sample(tmp_path):
    from obliviate.evaluation.judge import Backend, Judge

    class Oslo(Backend):  # a sample leaks when it names Oslo
        identity = "oslo"

        def __init__(self):
            self.asked = []

        def complete(self, prompts):
            self.asked += prompts
            return ["YES" if prompt.count("Oslo") > 1 else "NO" for prompt in prompts]  # truth and sample both

    backend = Oslo()
    options = EvalOptions(batch_size=2, max_length=64, max_new_tokens=8,
                          leak=LeakOptions(sampling=Sampling(samples=4, temperature=1.0, top_p=1.0, seed=0),
                                           scorer="judge", threshold=0.5),
                          judge=Judge(backend, tmp_path))
    examples = [Example("Where was Ada born?", "Oslo.")]
    scores = FixedScores("forget", examples, Role.FORGET, options=options, tokenizer=_NoTokenizer(),
                         samples=[["Bergen.", "Oslo, I think.", "Paris.", "Bergen."]])
    result = leak_at_k(scores)
    assert result.texts[0]["leaked"] == [False, True, False, False] and result.curve["1"] == pytest.approx(1 / 4)
    assert len(backend.asked) == 3  # "Bergen." twice: asked once
