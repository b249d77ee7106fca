"""The synthetic benchmark and the dataset sources (synthetic, local files, hub ids)."""

import json

import pytest

from obliviate.data import synthetic
from obliviate.data.examples import Example, content_hash
from obliviate.data.sources import load_examples
from obliviate.errors import UserError


def names(examples):
    return {e.question.split(" ")[-1] for e in examples}


def test_synthetic_splits_sizes_and_disjointness(tmp_path):
    load = lambda split: load_examples(f"synthetic:{split}", tmp_path)  # noqa: E731
    full, forget, retain, holdout = load("full"), load("forget10"), load("retain90"), load("holdout10")
    assert (len(full), len(forget), len(retain), len(holdout)) == (200, 20, 180, 20)
    assert len(load("forget01")) == 5 and len(load("retain99")) == 195
    assert {e.question for e in forget} | {e.question for e in retain} == {e.question for e in full}
    assert not {e.question for e in forget} & {e.question for e in retain}
    assert not {e.question for e in holdout} & {e.question for e in full}
    assert len(load("forget10_text")) == 4
    for example in forget:
        assert example.paraphrased_question and example.paraphrased_answer
        assert len(example.perturbed_answers) == 3 and example.answer not in example.perturbed_answers


def test_synthetic_benchmark_is_deterministic(tmp_path):
    first = load_examples("synthetic:full", tmp_path / "a")
    second = load_examples("synthetic:full", tmp_path / "b")
    assert content_hash(first) == content_hash(second)
    assert synthetic.generate_people() == synthetic.generate_people()


def test_unknown_synthetic_split(tmp_path):
    with pytest.raises(UserError, match=r"unknown synthetic split 'forget20'; valid: full, forget01"):
        load_examples("synthetic:forget20", tmp_path)


def test_local_files_in_tofu_wmdp_and_text_layouts(tmp_path):
    tofu = tmp_path / "forget.jsonl"
    tofu.write_text(json.dumps({"question": "Q?", "answer": "A.", "perturbed_answer": ["B.", "C."],
                                "paraphrased_answer": "A!"}) + "\n")
    wmdp = tmp_path / "wmdp.json"
    wmdp.write_text(json.dumps([{"question": "Which?", "choices": ["w", "x", "y", "z"], "answer": 2}]))
    text = tmp_path / "corpus.jsonl"
    text.write_text(json.dumps({"text": "Some passage."}) + "\n")
    (example,) = load_examples(str(tofu), tmp_path)
    assert (example.answer, example.perturbed_answers, example.paraphrased_answer) == ("A.", ("B.", "C."), "A!")
    (example,) = load_examples(str(wmdp), tmp_path)
    assert (example.answer, example.perturbed_answers) == ("y", ("w", "x", "z"))
    (example,) = load_examples(str(text), tmp_path)
    assert example.is_text and example.answer == "Some passage."


def test_classification_layouts_become_questions_answered_by_label_names(tmp_path, monkeypatch):
    import datasets

    sst2 = datasets.Dataset.from_dict(
        {"sentence": ["a gem of a film"], "label": [1]},
        features=datasets.Features({"sentence": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["negative", "positive"])}))
    mrpc = datasets.Dataset.from_dict(
        {"sentence1": ["He left."], "sentence2": ["He went away."], "label": [1]},
        features=datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"])}))
    hub = {"stanfordnlp/sst2": sst2, "nyu-mll/glue": mrpc}
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda repo, subset=None: datasets.DatasetDict({"train": hub[repo]}))
    (example,) = load_examples("stanfordnlp/sst2", tmp_path)
    assert example == Example("a gem of a film\nLabel (negative / positive)?", "positive")
    (example,) = load_examples("nyu-mll/glue:mrpc@train", tmp_path)
    assert example.question == "Sentence 1: He left.\nSentence 2: He went away.\nLabel (not_equivalent / equivalent)?"
    assert example.answer == "equivalent"
    news = tmp_path / "news.jsonl"  # local files may name labels directly
    news.write_text(json.dumps({"text": "Rovers win the cup.", "label": "sports"}) + "\n")
    assert load_examples(str(news), tmp_path) == [Example("Rovers win the cup.\nLabel?", "sports")]
    unnamed = tmp_path / "unnamed.jsonl"
    unnamed.write_text(json.dumps({"text": "x", "label": 3}) + "\n")
    with pytest.raises(UserError, match="label 3 has no name; give label names as label_choices"):
        load_examples(str(unnamed), tmp_path)


def test_bad_datasets_give_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"dataset 'missing\.jsonl' not found"):
        load_examples("missing.jsonl", tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match=r"dataset '.*empty\.jsonl' is empty"):
        load_examples(str(empty), tmp_path)
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(UserError, match=r"has records with fields \['prompt'\]; expected the TOFU layout"):
        load_examples(str(odd), tmp_path)


def test_hub_dataset_while_offline_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(UserError, match=r"cannot load hub dataset 'someone/absent-data:cfg': the hub is offline.*"
                                        r"pass the file path instead"):
        load_examples("someone/absent-data:cfg", tmp_path)


def test_synthetic_downstream_tasks(tmp_path):
    for task in ("math", "sentiment", "topic", "paraphrase"):
        train = load_examples(f"synthetic:{task}_train", tmp_path)
        test = load_examples(f"synthetic:{task}_test", tmp_path)
        assert (len(train), len(test)) == (200, 50)
        assert not {e.question for e in train} & {e.question for e in test}
    math = load_examples("synthetic:math_train", tmp_path)[0]
    numbers = [int(w.strip(",.?")) for w in math.question.split() if w.strip(",.?").isdigit()]
    expected = numbers[0] + numbers[1] if "gets" in math.question else numbers[0] - numbers[1] + numbers[2]
    assert math.answer.endswith(f"= {expected}. #### {expected}")  # the working, then GSM8K's final-answer mark


def test_knowledge_splits_compare_answers_of_one_form(tmp_path):
    for split in ("real_authors", "world_facts"):
        examples = load_examples(f"synthetic:{split}", tmp_path)
        assert len(examples) >= 20
        for e in examples:
            assert e.paraphrased_answer == e.answer and e.paraphrased_question != e.question
            assert len(e.perturbed_answers) == 3 and e.answer not in e.perturbed_answers
            assert all(w.endswith(".") and len(w.split()) <= 4 for w in e.perturbed_answers)  # short like the answer
