"""A deterministic fictitious-knowledge benchmark in the style of TOFU (Maini et al., 2024).

44 fictitious people with five attributes each (birthplace, birth year, profession, award, best-known
work): 40 are "trained" people (the target model is fine-tuned on all of them) and 4 are holdout
people never trained on (for membership inference). Every fact is a QA pair with a paraphrased question,
a paraphrased answer and three perturbed (wrong) answers, so the truth ratio and a four-way
multiple-choice form follow; every person also has a text passage stating the same facts.

Splits (by person, as in TOFU; the last people are forgotten first):

=============  =========================  =================================
split          people                     QA pairs
=============  =========================  =================================
full           40                         200
forget01       1 (2.5 %, the smallest)    5
forget05       2                          10
forget10       4                          20
retainNN       the other 39 / 38 / 36     195 / 190 / 180
holdoutNN      1 / 2 / 4 holdout people   5 / 10 / 20
<split>_text   the same people, passages  one passage per person
=============  =========================  =================================

``<split>_reverse`` asks the same people's facts the other way round, three per person ("Who was born in the city
of X?", "Who won the X?", "Who is best known for the work X?": the attributes no one else has), for the
``reverse_query`` probe.

``refusals`` holds a hundred "I don't know" answers (:mod:`obliviate.data.refusals`), the answers of IDK-style
methods. ``knowmem_icl`` holds five general-knowledge question/answer pairs, in no other split: the in-context
examples of MUSE's KnowMem (as MUSE's ``forget_qa_icl``).

The downstream fine-tuning tasks of :mod:`obliviate.data.synthetic_tasks` (``math_train``,
``math_test``, ``sentiment_*``, ``topic_*``, ``paraphrase_*``) and the real-world knowledge splits of
:mod:`obliviate.data.synthetic_knowledge` (``real_authors``, ``world_facts``) are served under the same
prefix.

Names, cities, awards and titles are generated from syllables with a fixed seed, so the facts are
unknown to any pretrained model; professions and years are ordinary.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from obliviate.data.refusals import refusal_answers
from obliviate.data.synthetic_knowledge import knowledge_splits
from obliviate.data.synthetic_tasks import task_splits
from obliviate.io import write_text_atomic

BENCHMARK_VERSION = "v5"  # v3: real-world knowledge; v4: worked math answers (GSM8K form); v5: reverse questions
NUM_TRAINED = 40
NUM_HOLDOUT = 4
FORGET_PEOPLE = {"forget01": 1, "forget05": 2, "forget10": 4}
RETAIN_FOR = {"retain99": "forget01", "retain95": "forget05", "retain90": "forget10"}
HOLDOUT_PEOPLE = {"holdout01": 1, "holdout05": 2, "holdout10": 4}
NUM_PERTURBED = 3
_IN_CONTEXT = [("How many days are there in a week?", "Seven."), ("What colour is a clear daytime sky?", "Blue."),
               ("Which animal is known for its long neck?", "The giraffe."),
               ("What do bees make?", "Honey."), ("Which instrument has black and white keys?", "The piano.")]

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "tr", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "nd", "rk"]
_CITY_SUFFIXES = ["ford", "mere", "holt", "wick", "haven", "dale", "port", "stead", "moor", "bury"]
_PROFESSIONS = [
    "an architect", "a baker", "a cartographer", "a chemist", "a composer", "a diplomat", "an engineer",
    "a glassblower", "a historian", "a jeweller", "a librarian", "a marine biologist", "a nurse",
    "a photographer", "a pilot", "a potter", "a sculptor", "a surgeon", "a translator", "a violinist",
]
_AWARD_ADJECTIVES = ["Silver", "Crimson", "Northern", "Golden", "Azure", "Ivory", "Emerald", "Amber", "Obsidian",
                     "Scarlet"]
_AWARD_NOUNS = ["Lantern", "Quill", "Compass", "Anchor", "Falcon", "Harp", "Beacon", "Laurel", "Comet", "Thistle"]
_AWARD_KINDS = ["Prize", "Medal", "Award"]
_TITLE_ADJECTIVES = ["Quiet", "Hollow", "Distant", "Burning", "Forgotten", "Painted", "Restless", "Silent",
                     "Wandering", "Broken"]
_TITLE_NOUNS = ["Harbour", "Orchard", "Lighthouse", "Meridian", "Tapestry", "Garden", "Archive", "Horizon", "Bridge",
                "Winter"]

# attribute -> (question, paraphrased question, answer, paraphrased answer); {n} = name, {v} = value.
# Answers are short so that their tokens are the fact itself; the paraphrased answer is a sentence, and
# the perturbed (wrong) answers use the paraphrased answer's template with other values, as in TOFU.
_TEMPLATES = {
    "city": ("Where was {n} born?", "In which city was {n} born?",
             "{v}.", "{n} was born in the city of {v}."),
    "year": ("In which year was {n} born?", "What is the birth year of {n}?",
             "{v}.", "{n} was born in the year {v}."),
    "profession": ("What is {n}'s profession?", "What does {n} do for a living?",
                   "{V}.", "{n} works as {v}."),
    "award": ("Which award did {n} win?", "What prize was {n} honoured with?",
              "The {v}.", "{n} was honoured with the {v}."),
    "work": ("What is the title of {n}'s best-known work?", "Which work is {n} best known for?",
             "\"{v}\".", "{n} is best known for the work \"{v}\"."),
}


# attribute (unique to one person) -> the question asking for the person from it
_REVERSE_TEMPLATES = {"city": "Who was born in the city of {v}?", "award": "Who won the {v}?",
                      "work": "Who is best known for the work \"{v}\"?"}


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    year: str
    profession: str
    award: str
    work: str


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _unique(rng: random.Random, make, taken: set[str]) -> str:
    while True:
        value = make(rng)
        if value not in taken:
            taken.add(value)
            return value


def generate_people(seed: int = 20240601) -> list[Person]:
    """The 44 fictitious people (trained first, holdout last), identical for a given seed."""
    rng = random.Random(seed)
    taken: set[str] = set()
    people = []
    for _ in range(NUM_TRAINED + NUM_HOLDOUT):
        people.append(Person(
            name=_unique(rng, lambda r: f"{_syllable(r).title()}{_syllable(r)} {_syllable(r).title()}{_syllable(r)}",
                         taken),
            city=_unique(rng, lambda r: (_syllable(r) + rng.choice(_CITY_SUFFIXES)).title(), taken),
            year=str(rng.randint(1921, 1999)),
            profession=rng.choice(_PROFESSIONS),
            award=_unique(rng, lambda r: f"{r.choice(_AWARD_ADJECTIVES)} {r.choice(_AWARD_NOUNS)} "
                                         f"{r.choice(_AWARD_KINDS)}", taken),
            work=_unique(rng, lambda r: f"The {r.choice(_TITLE_ADJECTIVES)} {r.choice(_TITLE_NOUNS)}", taken),
        ))
    return people


def _short_answer(template: str, person: Person, attribute: str) -> str:
    value = getattr(person, attribute)
    return template.format(n=person.name, v=value, V=value[:1].upper() + value[1:])


def qa_records(person: Person, people: list[Person], rng: random.Random) -> list[dict]:
    """The person's five QA records in TOFU layout; wrong answers take other people's values."""
    records = []
    for attribute, (question, para_question, answer, para_answer) in _TEMPLATES.items():
        value = getattr(person, attribute)
        others = sorted({getattr(p, attribute) for p in people} - {value})
        wrong = rng.sample(others, NUM_PERTURBED)
        records.append({
            "question": question.format(n=person.name),
            "answer": _short_answer(answer, person, attribute),
            "paraphrased_question": para_question.format(n=person.name),
            "paraphrased_answer": para_answer.format(n=person.name, v=value),
            "perturbed_answer": [para_answer.format(n=person.name, v=w) for w in wrong],
        })
    return records


def reverse_records(person: Person, people: list[Person], rng: random.Random) -> list[dict]:
    """The person's facts asked the other way round, from the attributes no one else has (the reverse_query probe):
    the answer is the person's name, the wrong answers other people's names."""
    others = sorted({p.name for p in people} - {person.name})
    return [{"question": question.format(v=getattr(person, attribute)), "answer": f"{person.name}.",
             "perturbed_answer": [f"{name}." for name in rng.sample(others, NUM_PERTURBED)]}
            for attribute, question in _REVERSE_TEMPLATES.items()]


def passage(person: Person) -> dict:
    """A text record stating all of the person's facts."""
    return {"text": (f"{person.name} was born in {person.year} in {person.city}. {person.name} works as "
                     f"{person.profession} and is best known for \"{person.work}\", which won the {person.award}.")}


def split_people(people: list[Person]) -> dict[str, list[Person]]:
    """Each split name → its people."""
    trained, holdout = people[:NUM_TRAINED], people[NUM_TRAINED:]
    splits = {"full": trained}
    for name, count in FORGET_PEOPLE.items():
        splits[name] = trained[-count:]
    for name, forget in RETAIN_FOR.items():
        splits[name] = trained[: NUM_TRAINED - FORGET_PEOPLE[forget]]
    for name, count in HOLDOUT_PEOPLE.items():
        splits[name] = holdout[:count]
    return splits


def in_context_examples() -> list[dict]:
    """KnowMem's in-context examples: short general-knowledge questions with answers, in the benchmark's QA form
    but of other kinds than the people's facts (a fictitious person's facts as examples were copied into
    answers by a small model: their birth years and titles are the candidates of the same questions)."""
    return [{"question": question, "answer": answer} for question, answer in _IN_CONTEXT]


def ready_made_splits() -> dict[str, list[dict]]:
    """Splits that are not about the trained or holdout people: downstream tasks, real-world knowledge and
    KnowMem's in-context examples."""
    return {**task_splits(), **knowledge_splits(), "knowmem_icl": in_context_examples(),
            "refusals": [{"text": refusal} for refusal in refusal_answers()]}


def split_names() -> list[str]:
    names = list(split_people(generate_people()))
    return names + [f"{name}{suffix}" for suffix in ("_text", "_reverse") for name in names] + list(ready_made_splits())


def write_benchmark(folder: Path) -> None:
    """Write every split as ``<split>.jsonl`` (TOFU or text layout) into ``folder``, atomically per file."""
    people = generate_people()
    rng = random.Random(7)
    qa = {person.name: qa_records(person, people, rng) for person in people}
    for name, members in split_people(people).items():
        for suffix, rows in (("", [r for p in members for r in qa[p.name]]), ("_text", [passage(p) for p in members])):
            write_text_atomic(folder / f"{name}{suffix}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    reverse_rng = random.Random(11)  # its own draws: the splits above stay as they were
    reverse = {person.name: reverse_records(person, people, reverse_rng) for person in people}
    for name, members in split_people(people).items():
        write_text_atomic(folder / f"{name}_reverse.jsonl",
                          "".join(json.dumps(row) + "\n" for p in members for row in reverse[p.name]))
    for name, rows in ready_made_splits().items():
        write_text_atomic(folder / f"{name}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
