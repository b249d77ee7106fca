"""Turn examples into token ids whose labels cover the answer only, and pad them into batches.

Label convention (the one every loss relies on): ``labels[t] = input_ids[t]`` on answer tokens
(including the closing EOS of a QA answer) and ``-100`` on prompt tokens and on padding. Padding is
identified by position (``attention_mask == 0``), never by token id, because many tokenizers use the
EOS token as the pad token.

One rule for training and evaluation alike: a QA answer ends with the tokenizer's EOS (TOFU and
open-unlearning label it too); plain text does not (MUSE's and open-unlearning's text scoring append none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from obliviate.data.examples import Example

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt: ``template.format(question=...)``, or the tokenizer's chat template."""

    template: str = "Question: {question}\nAnswer:"
    chat: bool = False

    def prompt(self, tokenizer: PreTrainedTokenizerBase, question: str) -> str:
        if self.chat:
            return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                 add_generation_prompt=True)
        return self.template.format(question=question)


class Query(NamedTuple):
    """One sequence to train on or score: a prompt (label -100; ``""`` for none) and the labelled answer."""

    prompt: str
    answer: str
    closing_eos: bool = True  # QA answers end with EOS; plain text does not


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    closing_eos: bool = False  # the last label is the appended EOS (False for text, or when truncated away)
    truncated: bool = False  # prompt + answer were longer than max_length and were cut


def encode(tokenizer: PreTrainedTokenizerBase, query: Query, max_length: int) -> Encoded:
    """Prompt tokens (label -100) followed by answer tokens (+ EOS for QA), truncated to ``max_length``.

    An empty prompt means plain text whose every token is a label (special tokens such as BOS are added
    as the tokenizer does; the first token is never predicted). A non-empty prompt is followed by one
    space before the answer unless it ends with whitespace.
    """
    prompt, answer, closing_eos = query
    if prompt:
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        separator = "" if prompt[-1].isspace() else " "
        answer_ids = tokenizer(separator + answer, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids, answer_ids = [], tokenizer(answer, add_special_tokens=True)["input_ids"]
    closing = closing_eos and tokenizer.eos_token_id is not None
    if closing:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    whole = len(prompt_ids) + len(answer_ids) <= max_length
    return Encoded(input_ids, labels, closing and whole, not whole)


def example_query(tokenizer: PreTrainedTokenizerBase, example: Example, fmt: PromptFormat) -> Query:
    """What an example trains on and is scored on: its question's prompt and its answer, or its text (after
    its prefix, when the record has one), without EOS."""
    if example.is_text:
        return Query(example.prefix, example.answer, closing_eos=False)
    return Query(fmt.prompt(tokenizer, example.question), example.answer)


def encode_example(tokenizer: PreTrainedTokenizerBase, example: Example, fmt: PromptFormat,
                   max_length: int) -> Encoded:
    """The training encoding of an example: its question and answer (or its text)."""
    return encode(tokenizer, example_query(tokenizer, example, fmt), max_length)


@dataclass
class TokenBatch:
    """A right-padded batch; ``index`` holds each row's position in its dataset (for cached quantities)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str) -> "TokenBatch":
        tensors = (self.input_ids, self.attention_mask, self.labels, self.index)
        return TokenBatch(*(tensor.to(device) for tensor in tensors))


def collate(items: list[Encoded], indices: list[int], pad_token_id: int) -> TokenBatch:
    """Right-pad ``items``; padded positions get attention 0 and label -100."""
    width = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        length = len(item.input_ids)
        input_ids[row, :length] = torch.tensor(item.input_ids)
        labels[row, :length] = torch.tensor(item.labels)
        attention[row, :length] = 1
    return TokenBatch(input_ids, attention, labels, torch.tensor(indices, dtype=torch.long))


class EncodedDataset(torch.utils.data.Dataset):
    """Examples encoded once, served with their index."""

    def __init__(self, encoded: list[Encoded], pad_token_id: int) -> None:
        self.encoded = encoded
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int) -> tuple[Encoded, int]:
        return self.encoded[index], index

    def collate(self, rows: list[tuple[Encoded, int]]) -> TokenBatch:
        return collate([row[0] for row in rows], [row[1] for row in rows], self.pad_token_id)

    def loader(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
               ) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                           collate_fn=self.collate)


def encode_dataset(tokenizer: PreTrainedTokenizerBase, examples: list[Example], fmt: PromptFormat,
                   max_length: int) -> EncodedDataset:
    """The training encoding of ``examples`` as a data set (the one way every trainer encodes its data)."""
    return EncodedDataset([encode_example(tokenizer, e, fmt, max_length) for e in examples], tokenizer.pad_token_id)


def encode_splits(tokenizer: PreTrainedTokenizerBase, data: dict[str, list[Example]], splits: set[str],
                  fmt: PromptFormat, max_length: int) -> dict[str, EncodedDataset]:
    """The training encoding of the named splits of ``data`` (those present)."""
    return {split: encode_dataset(tokenizer, data[split], fmt, max_length) for split in splits if split in data}


def truncated_answers(tokenizer: PreTrainedTokenizerBase, examples: list[Example], fmt: PromptFormat,
                      max_length: int) -> int:
    """How many question-answer examples do not fit ``max_length`` (their answers are cut when trained or scored;
    plain texts are cut by design and not counted)."""
    return sum(encode_example(tokenizer, e, fmt, max_length).truncated for e in examples if not e.is_text)
