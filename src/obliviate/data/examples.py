"""One record type for every dataset layout, and the conversion from TOFU, WMDP and text layouts.

* TOFU layout: ``question``, ``answer`` and optionally ``paraphrased_question``, ``paraphrased_answer``,
  ``perturbed_answer`` (a list of wrong answers, or one string).
* WMDP layout: ``question``, ``choices`` (list), ``answer`` (index of the correct choice); the other
  choices become the perturbed (wrong) answers.
* Classification layout (SST-2, AG News, MRPC): ``label`` (a name, or an index into ``label_choices``)
  with ``sentence`` or ``text``, or a pair ``sentence1``/``sentence2``; the question shows the text(s)
  and the label choices, the answer is the label's name. Hub datasets get ``label_choices`` from their
  ``ClassLabel`` feature.
* Text layout: ``text``; the whole text is trained on (there is no prompt). A JSON list of plain strings
  (MUSE's privleak files) is a list of texts.
* Completion layout (MUSE VerbMem): ``prompt`` and ``gt``: a text ``gt`` continuing the prefix ``prompt``;
  the prefix is not a label in training and is the prompt of VerbMem's continuation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from obliviate.errors import UserError


@dataclass(frozen=True)
class Example:
    """A question/answer pair (``question == ""`` for plain text, whose ``answer`` is the text and ``prefix``
    the text it continues, if any)."""

    question: str
    answer: str
    paraphrased_question: str | None = None
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = field(default_factory=tuple)
    prefix: str = ""

    @property
    def is_text(self) -> bool:
        return self.question == ""

    def record(self) -> dict[str, Any]:
        """The example's content as a dict (a field left at its empty default is omitted, so adding a field
        keeps the cache keys of existing data)."""
        content = asdict(self)
        if not self.prefix:
            del content["prefix"]
        return content


def example_from_record(record: dict[str, Any] | str, source: str) -> Example:
    """Convert one raw record (TOFU, WMDP, classification, completion or text layout) into an :class:`Example`."""
    if isinstance(record, str):
        return Example(question="", answer=record)
    if not isinstance(record, dict):
        raise UserError(f"dataset '{source}' has a record of type {type(record).__name__}; records are JSON "
                        "objects (or plain strings for texts)")
    if "question" in record and "choices" in record and isinstance(record.get("answer"), int):
        choices = [_text(c, "a choice", source) for c in record["choices"]]
        correct = record["answer"]
        if not 0 <= correct < len(choices):
            raise UserError(f"dataset '{source}': answer index {correct} is outside its {len(choices)} choices")
        wrong = tuple(c for i, c in enumerate(choices) if i != correct)
        return Example(question=_text(record["question"], "question", source), answer=choices[correct],
                       perturbed_answers=wrong)
    if "question" in record and "answer" in record:
        perturbed = record.get("perturbed_answer") or ()
        if isinstance(perturbed, str):
            perturbed = (perturbed,)
        return Example(
            question=_text(record["question"], "question", source),
            answer=_text(record["answer"], "answer", source),
            paraphrased_question=record.get("paraphrased_question"),
            paraphrased_answer=record.get("paraphrased_answer"),
            perturbed_answers=tuple(_text(p, "a perturbed_answer", source) for p in perturbed),
        )
    if "label" in record and ("sentence" in record or "text" in record or "sentence1" in record):
        return _classification(record, source)
    if "prompt" in record and "gt" in record:
        return Example(question="", answer=str(record["gt"]), prefix=str(record["prompt"]))
    if "text" in record:
        return Example(question="", answer=str(record["text"]))
    raise UserError(
        f"dataset '{source}' has records with fields {sorted(record)}; expected the TOFU layout "
        "(question/answer), the WMDP layout (question/choices/answer), a classification layout "
        "(sentence or text or sentence1/sentence2, with label), a completion (prompt/gt) or a text corpus (text)"
    )


def _text(value: Any, field: str, source: str) -> str:
    """A record's text field: a non-empty string (a number is taken as its text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"dataset '{source}': {field} is {json.dumps(value)}, not a text; give a string")
    text = str(value)
    if not text.strip():
        raise UserError(f"dataset '{source}': {field} is empty; give a non-empty string or drop the record")
    return text


def _classification(record: dict[str, Any], source: str) -> Example:
    """A labelled text (or sentence pair) as a question whose answer is the label name."""
    choices = [str(c) for c in record.get("label_choices") or []]
    label = record["label"]
    if isinstance(label, int) and not isinstance(label, bool):
        if not 0 <= label < len(choices):
            raise UserError(f"dataset '{source}': label {label} has no name; give label names as label_choices "
                            "(a list) or write labels as names")
        label = choices[label]
    if "sentence1" in record:
        text = f"Sentence 1: {record['sentence1']}\nSentence 2: {record.get('sentence2', '')}"
    else:
        text = str(record.get("sentence", record.get("text")))
    options = f" ({' / '.join(choices)})" if choices else ""
    return Example(question=f"{text}\nLabel{options}?", answer=str(label))


def content_hash(examples: list[Example]) -> str:
    """A short hash of the examples' content and order (for cache keys)."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(example.record(), sort_keys=True).encode())
    return digest.hexdigest()[:16]
