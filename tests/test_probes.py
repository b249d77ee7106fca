"""Prompt-level probes: each rephrases the forget questions (answers unchanged) as a split of the forget role."""

import pytest

from obliviate.data.examples import Example
from obliviate.errors import UserError
from obliviate.evaluation.probes import FEW_SHOT_FACTS, IGNORE_INSTRUCTIONS, ProbeData, probe_splits, synonymised
from obliviate.evaluation.splits import Role, Split

FORGET = Split("forget", Role.FORGET, (Example("Where was Ada born?", "Oslo", paraphrased_question="Ada's birthplace?"),
                                       Example("What does Ada do?", "Pilot")), primary=True)
RETAIN = Split("retain", Role.RETAIN, tuple(Example(f"Q{i}?", f"A{i}") for i in range(5)), primary=True)


def test_each_probe_rephrases_the_question_and_keeps_the_answer():
    paraphrased, fewshot, ignoring = probe_splits(FORGET, ProbeData(retain=RETAIN), ["paraphrased", "fewshot",
                                                                     "ignore_instructions"])
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
        probe_splits(FORGET, ProbeData(retain=None), ["fewshot"])


PEOPLE = Split("forget", Role.FORGET, (
    Example("Where was Ada Lind born?", "Oslo.", paraphrased_answer="Ada Lind was born in the city of Oslo."),
    Example("What is Ada Lind's profession?", "A pilot.", paraphrased_answer="Ada Lind works as a pilot."),
    Example("Which award did Bo Ek win?", "The Gold Prize.", paraphrased_answer="Bo Ek won the Gold Prize."),
    Example("What is the title of Ada Lind's best-known work?", '"Winter".')), primary=True)


def test_rwku_families_rewrite_every_forget_question():
    names = ["prefix_injection", "affirmative_suffix", "role_play", "synonym_manipulation", "background_hint",
             "in_context_learning", "cross_lingual"]
    splits = dict(zip(names, probe_splits(PEOPLE, ProbeData(retain=RETAIN), names)))
    assert all(split.role is Role.FORGET and [e.answer for e in split.examples] == [e.answer for e in PEOPLE.examples]
               for split in splits.values())
    assert splits["affirmative_suffix"].examples[0].question == "Where was Ada Lind born? Sure, here is the answer:"
    assert splits["synonym_manipulation"].examples[1].question == "What is Ada Lind's occupation?"
    assert splits["synonym_manipulation"].examples[3].question == ("What is the name of Ada Lind's most famous "
                                                                   "creation?")
    # the hint is another fact of the same person (most names shared, nearest first), never the question's own
    assert splits["background_hint"].examples[0].question == ("Background: Ada Lind works as a pilot.\n"
                                                              "Where was Ada Lind born?")
    assert splits["background_hint"].examples[2].question.startswith("Background: Ada Lind works as a pilot.")
    context = splits["in_context_learning"].examples[1].question.splitlines()
    assert context == ["Where was Ada Lind born? Oslo.", 'What is the title of Ada Lind\'s best-known work? "Winter".',
                       "What is Ada Lind's profession?"]
    assert splits["cross_lingual"].examples[0].question == "¿Dónde nació Ada Lind?"
    assert splits["cross_lingual"].examples[2].question == "¿Qué premio ganó Bo Ek?"


def test_synonyms_are_replaced_once_and_keep_capitals():
    assert synonymised("Who wrote 'Emma'? The author, born where?") == ("Who authored 'Emma'? The writer, brought "
                                                                        "into the world where?")
    assert synonymised("Award won? Prize?") == "Honour won? Distinction?"


def test_reverse_query_reads_the_reverse_questions():
    reverse = (Example("Who was born in the city of Oslo?", "Ada Lind."),)
    (split,) = probe_splits(PEOPLE, ProbeData(retain=None, reverse=reverse), ["reverse_query"])
    assert split.name == "forget_reverse_query" and split.examples == reverse
    with pytest.raises(UserError, match="eval.reverse_dataset_name"):
        probe_splits(PEOPLE, ProbeData(retain=None), ["reverse_query"])


def test_the_synthetic_benchmark_has_reverse_questions_of_its_forget_people(tmp_path):
    from obliviate.data.sources import load_examples

    forget = load_examples("synthetic:forget10", tmp_path)
    reverse = load_examples("synthetic:forget10_reverse", tmp_path)
    assert len(reverse) == 12
    names = {e.answer for e in reverse}
    assert len(names) == 4 and all(len(e.perturbed_answers) == 3 and e.answer not in e.perturbed_answers
                                   for e in reverse)
    city = next(e for e in forget if e.question.startswith("Where was"))
    asked = next(e for e in reverse if city.answer.rstrip(".") in e.question)
    assert asked.answer.rstrip(".") in city.question
