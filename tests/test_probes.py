"""Prompt-level probes: each rephrases the forget questions (answers unchanged) as a split of the forget role."""

import pytest

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.evaluation.probes import FEW_SHOT_FACTS, IGNORE_INSTRUCTIONS, probe_splits
from obliviate.evaluation.splits import Role, Split

FORGET = Split("forget", Role.FORGET, (Example("Where was Ada born?", "Oslo", paraphrased_question="Ada's birthplace?"),
                                       Example("What does Ada do?", "Pilot")), primary=True)
RETAIN = Split("retain", Role.RETAIN, tuple(Example(f"Q{i}?", f"A{i}") for i in range(5)), primary=True)


def test_each_probe_rephrases_the_question_and_keeps_the_answer():
    paraphrased, fewshot, ignoring = probe_splits(FORGET, RETAIN, ["paraphrased", "fewshot", "ignore_instructions"])
    assert [s.name for s in (paraphrased, fewshot, ignoring)] == ["forget_paraphrased", "forget_fewshot",
                                                                 "forget_ignore_instructions"]
    assert all(s.role is Role.FORGET and not s.primary for s in (paraphrased, fewshot, ignoring))
    assert [e.question for e in paraphrased.examples] == ["Ada's birthplace?", "What does Ada do?"]  # no paraphrase
    context = "\n".join(f"Q{i}? A{i}" for i in range(FEW_SHOT_FACTS))
    assert fewshot.examples[0].question == f"{context}\nWhere was Ada born?"
    assert ignoring.examples[1].question == f"{IGNORE_INSTRUCTIONS} What does Ada do?"
    for split in (paraphrased, fewshot, ignoring):
        assert [e.answer for e in split.examples] == ["Oslo", "Pilot"]


def test_fewshot_needs_retain_questions():
    with pytest.raises(UserError, match="eval.probes fewshot takes its context from the retain split"):
        probe_splits(FORGET, None, ["fewshot"])
