"""Batched model queries used by the metrics: answer-token statistics under teacher forcing, and greedy answers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.tokenize import collate, encode
from obliviate.methods.likelihood import forward_logits, shifted


@dataclass(frozen=True)
class AnswerTokens:
    """Teacher-forced statistics of one answer's tokens (+ EOS), in order, given its prompt.

    ``log_probs[t]`` = log p(y_t | prompt, y_<t); ``is_argmax[t]``: the most likely token is y_t;
    ``standardised[t]`` = (log p(y_t) − μ_t) / σ_t with μ_t = Σ_v p(v) log p(v) and σ_t² = Σ_v p(v) log² p(v) − μ_t²
    over the model's next-token distribution at t (Min-K%++, Zhang et al. 2024).
    """

    log_probs: tuple[float, ...]
    is_argmax: tuple[bool, ...]
    standardised: tuple[float, ...]

    @property
    def mean_nll(self) -> float:
        return -sum(self.log_probs) / max(len(self.log_probs), 1)


def token_statistics(logits: torch.Tensor, labels: torch.Tensor) -> list[AnswerTokens]:
    """:class:`AnswerTokens` of each row of a batch (labels −100 outside the answer)."""
    logits, targets, mask = shifted(logits, labels)
    log_p = F.log_softmax(logits, dim=-1)
    picked = log_p.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    p = log_p.exp()
    mu = (p * log_p).sum(-1)
    sigma = ((p * log_p.pow(2)).sum(-1) - mu.pow(2)).clamp(min=1e-12).sqrt()
    is_argmax = log_p.argmax(-1) == targets
    rows = []
    for row in range(targets.shape[0]):
        keep = mask[row]
        rows.append(AnswerTokens(tuple(picked[row][keep].tolist()), tuple(is_argmax[row][keep].tolist()),
                                 tuple(((picked[row] - mu[row]) / sigma[row])[keep].tolist())))
    return rows


@torch.no_grad()
def answer_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]],
                  max_length: int, batch_size: int) -> list[AnswerTokens]:
    """For each (prompt, answer): its answer tokens' teacher-forced statistics (batched, shortest first)."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, prompt, answer, max_length) for prompt, answer in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))  # less padding
    result: list[AnswerTokens | None] = [None] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc="scoring answers", leave=False):
        rows = order[start:start + batch_size]
        batch = collate([encoded[i] for i in rows], rows, tokenizer.pad_token_id).to(device)
        for row, stats in zip(rows, token_statistics(forward_logits(model, batch), batch.labels)):
            result[row] = stats
    return result


@torch.no_grad()
def greedy_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                   max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy continuations of each prompt (left-padded batches), special tokens removed, stripped."""
    model.eval()
    device = next(model.parameters()).device
    answers: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generating answers", leave=False):
            inputs = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True).to(device)
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            answers += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers
