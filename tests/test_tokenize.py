"""Labels cover answer tokens (and the closing EOS) only; prompt and padding are -100."""

import torch

from obliviate.data.examples import Example
from obliviate.data.tokenize import IGNORE_INDEX, PromptFormat, Query, collate, encode, encode_example


def test_prompt_tokens_are_masked_and_answer_ends_with_eos(tokenizer):
    encoded = encode(tokenizer, Query("Question: Who?\nAnswer:", "Ada Lovelace."), 64)
    prompt_ids = tokenizer("Question: Who?\nAnswer:")["input_ids"]
    answer_ids = tokenizer(" Ada Lovelace.", add_special_tokens=False)["input_ids"]
    assert encoded.input_ids == prompt_ids + answer_ids + [tokenizer.eos_token_id]
    assert encoded.labels == [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [tokenizer.eos_token_id]
    assert encoded.closing_eos
    assert not encode(tokenizer, Query("Question: Who?\nAnswer:", "Ada Lovelace."), len(prompt_ids) + 2).closing_eos


def test_padding_is_masked_by_position_even_though_pad_equals_eos(tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the case that breaks id-based masking
    short = encode(tokenizer, Query("Q:", "A."), 64)
    long = encode(tokenizer, Query("Question: a longer one?", "A longer answer."), 64)
    batch = collate([short, long], [0, 1], tokenizer.pad_token_id)
    length = len(short.input_ids)
    assert batch.attention_mask[0].tolist() == [1] * length + [0] * (batch.input_ids.shape[1] - length)
    assert (batch.labels[0, length:] == IGNORE_INDEX).all()
    assert batch.labels[0, length - 1].item() == tokenizer.eos_token_id  # the answer's own EOS is learned
    assert batch.index.tolist() == [0, 1]


def test_text_examples_train_on_every_token_and_truncate(tokenizer):
    example = Example(question="", answer="one two three four five six seven eight")
    encoded = encode_example(tokenizer, example, PromptFormat(), max_length=4)
    assert len(encoded.input_ids) == 4 and encoded.labels == encoded.input_ids


def test_texts_get_no_closing_eos_in_training_or_scoring(tokenizer):
    """One rule (MUSE's and open-unlearning's text scoring append no EOS): a text ends with its last token."""
    text = "one two three"
    encoded = encode_example(tokenizer, Example(question="", answer=text), PromptFormat(), 64)
    assert encoded.input_ids == tokenizer(text)["input_ids"] and not encoded.closing_eos
    continuation = Example(question="", answer="three four", prefix="one two")
    continued = encode_example(tokenizer, continuation, PromptFormat(), 64)
    prefix_ids = tokenizer("one two")["input_ids"]
    answer_ids = tokenizer(" three four", add_special_tokens=False)["input_ids"]
    assert continued.labels == [IGNORE_INDEX] * len(prefix_ids) + answer_ids


def test_chat_template_prompt(tokenizer):
    fmt = PromptFormat(chat=True)
    prompt = fmt.prompt(tokenizer, "Hi?")
    assert "Hi?" in prompt and prompt.rstrip().endswith("assistant")
    encoded = encode_example(tokenizer, Example("Hi?", "Hello."), fmt, 256)
    assert torch.tensor(encoded.labels).ne(IGNORE_INDEX).sum() == len(
        tokenizer("Hello.", add_special_tokens=False)["input_ids"]) + 1
