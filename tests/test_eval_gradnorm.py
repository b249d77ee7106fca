"""The gradient-norm membership attack against an independent computation (locuslab/open-unlearning
src/evals/metrics/mia/gradnorm.py: per example, mean over parameter tensors of ||grad||_2 of the mean NLL of
the answer without its EOS)."""

import pytest
import torch
from evaluation_helpers import OPTIONS, split_of

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation import METRICS, MODEL_METRICS
from obliviate.evaluation.queries import SplitScores
from obliviate.models.embedded import tiny_random_llama


def independent_norm(model, tokenizer, question, answer):
    prompt = tokenizer(f"Question: {question}\nAnswer:")["input_ids"]
    target = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]  # the EOS is not scored
    ids = torch.tensor([prompt + target + [tokenizer.eos_token_id]])
    labels = torch.tensor([[-100] * len(prompt) + target + [-100]])
    model.zero_grad()
    model(input_ids=ids, labels=labels).loss.backward()
    norms = [p.grad.norm(2) for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    return float(torch.stack(norms).mean())


def test_gradient_norm_score_against_an_independent_computation(tokenizer):
    model = tiny_random_llama(tokenizer)
    model.model.embed_tokens.weight.requires_grad_(False)  # frozen for training: its gradient still counts
    examples = [Example("Who is she?", "Ada Lovelace."), Example("Where?", "In London, in 1815.")]
    scores = SplitScores(split_of("forget", examples), model, tokenizer, PromptFormat(), OPTIONS)
    result = METRICS.get("mia_gradnorm").compute(scores)
    assert not model.model.embed_tokens.weight.requires_grad  # restored
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind
    model.requires_grad_(True)
    expected = [-independent_norm(model, tokenizer, e.question, e.answer) for e in examples]
    assert result.per_example == pytest.approx(expected, rel=1e-4)  # negated: higher = more member-like
    assert MODEL_METRICS.get("mia_gradnorm_auc").triggered_by == {"mia_gradnorm"}
