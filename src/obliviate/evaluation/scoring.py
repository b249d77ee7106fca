"""Batched model queries used by the metrics: answer-token statistics under teacher forcing, and greedy or sampled
answers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.tokenize import Query, collate, encode
from obliviate.errors import UserError
from obliviate.evaluation.spread import map_batches
from obliviate.likelihood import CHUNK_LOGITS, kept_logits, predicting_labels

MIN_VARIANCE = 1e-6  # σ_t² floor of Min-K%++ (open-unlearning src/evals/metrics/mia/min_k_plus_plus.py)


@dataclass(frozen=True)
class AnswerTokens:
    """Teacher-forced statistics of one answer's tokens (+ its closing EOS for QA), in order, given its prompt.

    ``token_ids[t]`` = y_t; ``log_probs[t]`` = log p(y_t | prompt, y_<t); ``is_argmax[t]``: the most likely
    token is y_t; ``standardised[t]`` = (log p(y_t) − μ_t) / σ_t with μ_t = Σ_v p(v) log p(v) and
    σ_t² = max(Σ_v p(v) log² p(v) − μ_t², 1e-6) over the model's next-token distribution at t (Min-K%++,
    Zhang et al. 2024). ``closing_eos``: the last token is the EOS appended to a QA answer.

    Two token spans: :attr:`mean_nll` covers every label, EOS included (TOFU's probability, the LOSS and
    zlib attacks: open-unlearning ``evaluate_probability``); :meth:`content` drops the closing EOS, as
    open-unlearning's ``tokenwise_logprobs`` does for exact memorisation, extraction strength, Min-K%,
    Min-K%++ and the gradient norm (it drops the last label of a text too; we keep a text's last token,
    which is real text, not an EOS).
    """

    token_ids: tuple[int, ...]
    log_probs: tuple[float, ...]
    is_argmax: tuple[bool, ...]
    standardised: tuple[float, ...]
    closing_eos: bool = False

    @property
    def mean_nll(self) -> float:
        return -sum(self.log_probs) / max(len(self.log_probs), 1)

    def content(self) -> "AnswerTokens":
        """The same statistics without the closing EOS (at least one token is kept)."""
        if not self.closing_eos or len(self.token_ids) < 2:
            return self
        return self.first(len(self.token_ids) - 1)

    def first(self, count: int) -> "AnswerTokens":
        """The statistics of the first ``count`` tokens (a closing EOS is kept only when all are)."""
        if count == len(self.token_ids):
            return self
        return AnswerTokens(self.token_ids[:count], self.log_probs[:count], self.is_argmax[:count],
                            self.standardised[:count])


class ScoredIndex:
    """Answer-token statistics already computed, found by token ids.

    A request (prefix ids, continuation ids) is answered by any scored answer after the same prefix whose tokens
    begin with the continuation: log p(y_t | prefix, y_<t) depends only on the tokens before t, so the first
    tokens of a longer answer (e.g. an answer scored with its closing EOS) are the continuation's statistics.
    Nothing else matches, so a request tokenized differently is computed, never approximated."""

    def __init__(self) -> None:
        self._by_prefix: dict[tuple[int, ...], list[AnswerTokens]] = {}

    def add(self, prefix: list[int], statistics: AnswerTokens) -> None:
        self._by_prefix.setdefault(tuple(prefix), []).append(statistics)

    def find(self, prefix: list[int], continuation: list[int]) -> AnswerTokens | None:
        """The statistics of ``continuation``'s tokens after ``prefix``, or None when none was scored."""
        wanted = tuple(continuation)
        for statistics in self._by_prefix.get(tuple(prefix), ()):
            if statistics.token_ids[:len(wanted)] == wanted:
                return statistics.first(len(wanted))
        return None


def position_statistics(logits: torch.Tensor, targets: torch.Tensor, counts: list[int], closing_eos: list[bool]
                        ) -> list[AnswerTokens]:
    """:class:`AnswerTokens` of consecutive answers: ``logits[n]`` ([N, V]) predicts ``targets[n]``, the first
    ``counts[0]`` positions are the first answer's, and so on. The fp32 log-softmax runs
    :data:`~obliviate.likelihood.CHUNK_LOGITS` logits at a time."""
    rows = max(1, CHUNK_LOGITS // max(logits.shape[-1], 1))
    picked, standardised, is_argmax = [], [], []
    for part, goal in zip(logits.split(rows), targets.split(rows)):
        log_p = F.log_softmax(part.float(), dim=-1)
        chosen = log_p.gather(-1, goal.unsqueeze(-1)).squeeze(-1)
        weighted = log_p.exp().mul_(log_p)  # p log p, then p log² p in place: one vocabulary-sized temporary
        mu = weighted.sum(-1)
        sigma = (weighted.mul_(log_p).sum(-1) - mu.pow(2)).clamp(min=MIN_VARIANCE).sqrt()
        picked.append(chosen)
        standardised.append((chosen - mu) / sigma)
        is_argmax.append(log_p.argmax(-1) == goal)
    values = [torch.cat(parts).tolist() if parts else [] for parts in (picked, standardised, is_argmax)]
    token_ids = targets.tolist()
    answers, start = [], 0
    for count, closing in zip(counts, closing_eos):
        span = slice(start, start + count)
        answers.append(AnswerTokens(tuple(token_ids[span]), tuple(values[0][span]), tuple(values[2][span]),
                                    tuple(values[1][span]), closing))
        start += count
    return answers


@torch.no_grad()
def answer_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Query],
                  max_length: int, batch_size: int) -> list[AnswerTokens]:
    """For each query (prompt, answer): its answer tokens' teacher-forced statistics.

    Answers that share a prompt (a question scored against its paraphrased and perturbed answers, or
    its options) are scored with the prompt run once: its key/value cache is copied to each answer.
    The rest are batched shortest first. Both give the same numbers (tested)."""
    model.eval()
    by_prompt: dict[str, list[int]] = {}
    for position, (prompt, _, _) in enumerate(pairs):
        by_prompt.setdefault(prompt, []).append(position)
    lengths = {prompt: len(tokenizer(prompt)["input_ids"]) for prompt in by_prompt if prompt}
    if cut := next((prompt for prompt, length in lengths.items() if length >= max_length), None):
        raise UserError(f"an evaluated prompt has {lengths[cut]} tokens, and dataset.max_length {max_length} cuts its "
                        f"answer off entirely (it begins {cut[:50]!r}); raise dataset.max_length")
    shared = {prompt: rows for prompt, rows in by_prompt.items()
              if prompt and len(rows) > 1 and lengths[prompt] < max_length}
    alone = [position for prompt, rows in by_prompt.items() if prompt not in shared for position in rows]
    result: list[AnswerTokens | None] = [None] * len(pairs)
    groups = list(shared.items())
    chunks = [groups[start:start + batch_size] for start in range(0, len(groups), batch_size)]

    def score(chunk: list[tuple[str, list[int]]]) -> list[list[AnswerTokens]]:
        answers = [[pairs[row] for row in rows] for _, rows in chunk]
        return shared_prompt_statistics(model, tokenizer, [prompt for prompt, _ in chunk], answers, max_length)

    for chunk, statistics in zip(chunks, map_batches(chunks, score, "scoring answers (shared prompts)")):
        for (_, rows), group in zip(chunk, statistics):
            for row, stats in zip(rows, group):
                result[row] = stats
    for row, stats in zip(alone, separate_statistics(model, tokenizer, [pairs[row] for row in alone], max_length,
                                                     batch_size)):
        result[row] = stats
    return result


def separate_statistics(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[Query],
                        max_length: int, batch_size: int) -> list[AnswerTokens]:
    """Each query as its own sequence, batched shortest first (less padding)."""
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, query, max_length) for query in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def score(rows: list[int]) -> list[AnswerTokens]:
        batch = collate([encoded[i] for i in rows], rows, tokenizer.pad_token_id).to(device)
        keep = predicting_labels(batch.labels)
        logits = kept_logits(model, batch.input_ids, batch.attention_mask, keep)
        return position_statistics(logits, batch.labels[:, 1:][keep[:, :-1]], keep.sum(1).tolist(),
                                   [encoded[i].closing_eos for i in rows])

    result: list[AnswerTokens | None] = [None] * len(encoded)
    for rows, statistics in zip(chunks, map_batches(chunks, score, "scoring answers")):
        for row, stats in zip(rows, statistics):
            result[row] = stats
    return result


def shared_prompt_statistics(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                             answers: list[list[Query]], max_length: int) -> list[list[AnswerTokens]]:
    """Statistics of each prompt's answers, the prompt run once (:func:`prefix_statistics`). Tokens are exactly
    those of :func:`~obliviate.data.tokenize.encode` (prompt with special tokens, answer + EOS, cut at
    max_length)."""
    prompt_ids = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    continuations, closing = [], []
    for ids, options in zip(prompt_ids, answers):
        encoded = [encode(tokenizer, query, max_length) for query in options]
        continuations.append([item.input_ids[len(ids):] for item in encoded])
        closing.append([item.closing_eos for item in encoded])
    return prefix_statistics(model, prompt_ids, continuations, closing, tokenizer.pad_token_id)


def prefix_statistics(model: PreTrainedModel, prefixes: list[list[int]], continuations: list[list[list[int]]],
                      closing: list[list[bool]], pad: int) -> list[list[AnswerTokens]]:
    """Statistics of each prefix's continuations (token ids, none empty): the prefixes run once (left-padded),
    their key/value caches are repeated for each continuation, and the continuations (right-padded) go on
    from them; ``closing[i][j]``: continuation j of prefix i ends with a closing EOS."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids in prefixes)
    prompt_batch = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prefixes], device=device)
    prompt_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prefixes], device=device)
    out = model(input_ids=prompt_batch, attention_mask=prompt_mask,
                position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
    owner = [question for question, options in enumerate(continuations) for _ in options]
    answer_ids = [ids for options in continuations for ids in options]
    owner_index = torch.tensor(owner, device=device)
    cache = out.past_key_values
    cache.reorder_cache(owner_index)  # one copy of its prompt's keys and values per answer
    length = max(len(ids) for ids in answer_ids)
    batch = torch.tensor([ids + [pad] * (length - len(ids)) for ids in answer_ids], device=device)
    answer_mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids in answer_ids], device=device)
    starts = prompt_mask.sum(-1)[owner_index].unsqueeze(1)
    keep = torch.zeros_like(answer_mask, dtype=torch.bool)
    keep[:, :-1] = answer_mask[:, 1:].bool()  # answer position t predicts token t+1
    later = kept_logits(model, batch, torch.cat([prompt_mask[owner_index], answer_mask], dim=1), keep,
                        position_ids=starts + torch.arange(length, device=device), past_key_values=cache)
    # the prompt's last position predicts each answer's first token, its own positions the rest: in answer order
    counts = [len(ids) for ids in answer_ids]
    order, start = [], len(answer_ids)
    for row, count in enumerate(counts):
        order += [row, *range(start, start + count - 1)]
        start += count - 1
    predicting = torch.cat([out.logits[owner_index, -1], later])[torch.tensor(order, device=device)]
    flat = position_statistics(predicting, batch[answer_mask.bool()], counts,
                               [flag for flags in closing for flag in flags])
    grouped, position = [], 0
    for options in continuations:
        grouped.append(flat[position:position + len(options)])
        position += len(options)
    return grouped


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """Ancestral sampling of ``samples`` answers per prompt at ``temperature`` with nucleus ``top_p``; each batch
    of prompts is seeded by (``seed``, its index), so the samples are the same at any number of processes."""

    samples: int
    temperature: float
    top_p: float
    seed: int

    def batch_seed(self, index: int) -> int:
        return self.seed * 1_000_003 + index


def greedy_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                   max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy continuations of each prompt, special tokens removed, stripped, in the order of ``prompts``."""
    return [answers[0] for answers in generated_answers(model, tokenizer, prompts, max_new_tokens, batch_size)]


def sampled_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                    max_new_tokens: int, batch_size: int, sampling: Sampling) -> list[list[str]]:
    """``sampling.samples`` sampled continuations of each prompt (batches of ``batch_size`` prompts, each repeated
    ``samples`` times), in the order of ``prompts``."""
    return generated_answers(model, tokenizer, prompts, max_new_tokens, batch_size, sampling)


@torch.no_grad()
def generated_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                      max_new_tokens: int, batch_size: int, sampling: Sampling | None = None) -> list[list[str]]:
    """Continuations of each prompt: one greedy, or ``sampling.samples`` sampled. Left-padded batches of prompts of
    similar length, shortest first (less padding to attend over); special tokens removed, stripped."""
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    copies = sampling.samples if sampling is not None else 1

    def generate(batch: tuple[int, list[str]]) -> list[list[str]]:
        index, chunk = batch
        inputs = tokenizer([prompt for prompt in chunk for _ in range(copies)], return_tensors="pt",
                           padding=True).to(device)
        options = {"do_sample": False}
        if sampling is not None:
            torch.manual_seed(sampling.batch_seed(index))
            options = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                **options)
        texts = [text.strip() for text in tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:],
                                                                 skip_special_tokens=True)]
        return [texts[start:start + copies] for start in range(0, len(texts), copies)]

    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda row: lengths[row])
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    batches = [(index, [prompts[row] for row in rows]) for index, rows in enumerate(chunks)]
    result: list[list[str]] = [[] for _ in prompts]
    try:
        for rows, answers in zip(chunks, map_batches(batches, generate, "generating answers")):
            for row, answer in zip(rows, answers):
                result[row] = answer
    finally:
        tokenizer.padding_side = side
    return result
