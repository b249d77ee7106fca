"""Batched model queries used by the metrics: answer NLL under teacher forcing, and greedy answers."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.tokenize import collate, encode
from obliviate.methods.likelihood import forward_logits, sequence_nll


@torch.no_grad()
def mean_answer_nll(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]],
                    max_length: int, batch_size: int) -> list[float]:
    """For each (prompt, answer): the mean NLL of the answer tokens (+ EOS) given the prompt."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, prompt, answer, max_length) for prompt, answer in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))  # less padding
    result = [0.0] * len(encoded)
    for start in tqdm(range(0, len(order), batch_size), desc="scoring answers", leave=False):
        rows = order[start:start + batch_size]
        batch = collate([encoded[i] for i in rows], rows, tokenizer.pad_token_id).to(device)
        sums, counts = sequence_nll(forward_logits(model, batch), batch.labels)
        for row, value in zip(rows, (sums / counts.clamp(min=1.0)).tolist()):
            result[row] = value
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
