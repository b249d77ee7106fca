"""MUSE's metrics as MUSE's own code computes them (swj0419/muse_bench eval.py, metrics/knowmem.py,
metrics/verbmem.py, metrics/privleak.py, metrics/logger.py)."""

import json
from dataclasses import replace

import pytest
from evaluation_helpers import OPTIONS, FixedScores, split_of

from obliviate.data.examples import Example, example_from_record
from obliviate.data.sources import load_examples
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation import METRICS
from obliviate.evaluation.declarations import NotComputed
from obliviate.evaluation.metrics.muse import cut_at_stop_strings, few_shot_prompt, privleak_from_aucs
from obliviate.evaluation.queries import Continuation, SplitScores
from obliviate.models.embedded import tiny_random_llama


def test_knowmem_prompt_is_muses_few_shot_prompt(tokenizer):
    """metrics/knowmem.py: 'Question: {q}\\nAnswer: {a}\\n\\n' per in-context example, then the question."""
    shots = [("Who is A?", "A is B."), ("Where is C?", "In D.")]
    prompt = few_shot_prompt(PromptFormat(), tokenizer, shots, "What is E?")
    assert prompt == ("Question: Who is A?\nAnswer: A is B.\n\nQuestion: Where is C?\nAnswer: In D.\n\n"
                      "Question: What is E?\nAnswer:")
    muse = few_shot_prompt(PromptFormat("Question: {question}\nAnswer: "), tokenizer, shots, "What is E?")
    assert muse.endswith("\n\nQuestion: What is E?\nAnswer: ") and "Answer: A is B.\n\n" in muse  # MUSE's exact string


def test_knowmem_cuts_at_muses_stop_strings():
    """get_prefix_before_words_occur(output, ["\\n\\n", "\\nQuestion", "Question:"]) in metrics/knowmem.py."""
    assert cut_at_stop_strings(" Paris.\n\nQuestion: next") == " Paris."
    assert cut_at_stop_strings(" Paris.\nQuestion: next") == " Paris."
    assert cut_at_stop_strings(" Paris. Question: x") == " Paris. "
    assert cut_at_stop_strings(" Paris.\nMore") == " Paris.\nMore"


def test_knowmem_scores_rouge_l_f1_without_stemming(tokenizer):
    """MUSE's RougeEvalLogger: RougeScorer(..., use_stemmer=False), the rougeL F-measure."""
    model = tiny_random_llama(tokenizer)
    example = Example("What does she do?", "she runs")
    scores = SplitScores(split_of("forget", [example]), model, tokenizer, PromptFormat(),
                         replace(OPTIONS, knowmem_shots={"": (Example("Who?", "Ada."),)}))
    scores.generate = lambda prompts, budget: ["she running\n\nQuestion: more"] * len(prompts)
    result = METRICS.get("knowmem").compute(scores)
    assert result.value == pytest.approx(0.5)  # "she" matches, "running" is not "runs" without stemming
    (text,) = result.texts
    assert text["generation"] == "she running" and text["prompt"].startswith("Question: Who?\nAnswer: Ada.\n\n")


def test_verbmem_continues_the_prefix_of_each_text(tokenizer):
    model = tiny_random_llama(tokenizer)
    text = " ".join(f"word{i}" for i in range(40))
    scores = SplitScores(split_of("forget", [Example("", text)]), model, tokenizer, PromptFormat(), OPTIONS)
    ((prefix, truth, generated),) = scores.continuations
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert prefix == tokenizer.decode(ids[:32]) and truth == tokenizer.decode(ids[32:])
    assert isinstance(generated, str)
    assert not METRICS.get("verbmem").applies_to(split_of("forget", [Example("q", "a")]))  # questions: no VerbMem


def test_muse_layouts_load_and_verbmem_continues_the_records_own_prompt(tokenizer, tmp_path):
    """MUSE's VerbMem records are {prompt, gt}; KnowMem's {question, answer}; privleak files lists of texts."""
    verbmem = example_from_record({"prompt": "The court ruled", "gt": "that the law was void."}, "verbmem")
    assert verbmem.is_text and verbmem.prefix == "The court ruled" and verbmem.answer == "that the law was void."
    assert example_from_record({"question": "Q?", "answer": "A."}, "knowmem") == Example("Q?", "A.")
    (tmp_path / "privleak.json").write_text(json.dumps(["first text", "second text"]))
    assert [e.answer for e in load_examples(str(tmp_path / "privleak.json"), tmp_path)] == ["first text", "second text"]
    model = tiny_random_llama(tokenizer)
    scores = SplitScores(split_of("forget", [verbmem]), model, tokenizer, PromptFormat(), OPTIONS)
    ((prefix, truth, _),) = scores.continuations
    assert (prefix, truth) == ("The court ruled", "that the law was void.")


def test_verbmem_is_rouge_l_f1_without_stemming():
    continuations = [Continuation("p", "the cat sat on the mat", "the cat on mat"),
                     Continuation("p", "she runs", "she running")]
    scores = FixedScores("forget", [Example("", "x")] * 2, continuations=continuations)
    # LCS 4 of 6 reference / 4 of 4 generated tokens: F1 0.8; "she" only: F1 0.5
    assert METRICS.get("verbmem").compute(scores).per_example == pytest.approx([0.8, 0.5])


def test_privleak_sign_follows_muse():
    # MUSE orientation A = 1 - forget-positive AUC; (A_model - A_retain) / A_retain * 100
    assert privleak_from_aucs(0.9, 0.5) == pytest.approx((0.1 - 0.5) / 0.5 * 100)  # forget still recognised: negative
    assert privleak_from_aucs(0.5, 0.5) == 0.0
    assert privleak_from_aucs(0.2, 0.5) == pytest.approx(60.0)  # forget looks less familiar than unseen: positive
    with pytest.raises(NotComputed, match="divides by 0"):
        privleak_from_aucs(0.3, 1.0)


def test_text_scoring_appends_no_eos(tokenizer):
    """MUSE's privleak scores tokenizer.encode(text): no EOS; the same tokens as training sees."""
    model = tiny_random_llama(tokenizer)
    text = "A short passage about a court."
    scores = SplitScores(split_of("forget", [Example("", text)]), model, tokenizer, PromptFormat(), OPTIONS)
    (stats,) = scores.answer_tokens
    ids = tokenizer(text)["input_ids"]
    assert stats.token_ids == tuple(ids[1:]) and not stats.closing_eos  # every token after the first, no EOS
