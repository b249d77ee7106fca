"""Multiple-choice accuracy through lm-eval on the in-process model (no reload from disk).

A split's questions with wrong answers become four-way questions (the base answer of the split's role, as
the truth ratio compares: the paraphrase on forget/retain whose TOFU wrong answers perturb it, the answer on
knowledge splits; and up to three wrong ones, in a fixed order); they are handed to lm-eval in memory (its
``custom_dataset``: no file to write) and run through ``lm_eval.evaluate`` (not ``simple_evaluate``, whose
environment report cost 0.4 s per split) and evaluated
with the task template ``lm-evaluation-harness/obliviate/qa_mcq.yaml`` (log-likelihood of each choice, metric
``acc``). Choices the split
has already scored with the same tokens (the truth ratio's answers, ``prob``'s) are read from its scores, not run
again.
"""

from __future__ import annotations

import functools
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from obliviate.evaluation.declarations import MetricResult, NotComputed, metric
from obliviate.evaluation.lm_eval_tasks import evaluate_task_configs
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.splits import ALL_ROLES

TASKS_DIR = Path(__file__).resolve().parents[4] / "lm-evaluation-harness"
TEMPLATE = TASKS_DIR / "obliviate" / "qa_mcq.yaml"
MAX_CHOICES = 4


def mcq_rows(scores: SplitScores) -> list[dict]:
    """prompt / choices / label rows for the questions that have wrong answers."""
    rows = []
    for example in scores.split.questions:
        if not example.perturbed_answers:
            continue
        options = scores.option_queries(example)[:MAX_CHOICES]  # the base answer, then the wrong ones
        correct, choices = options[0].answer, [option.answer for option in options]
        random.Random(example.question).shuffle(choices)
        rows.append({"prompt": options[0].prompt, "choices": choices, "label": choices.index(correct)})
    return rows


def _in_memory(rows: list[dict], **_task_metadata: Any) -> dict:
    """The task's data as lm-eval's ``custom_dataset`` returns it (lm-eval passes the task's metadata and
    dataset_kwargs, which the rows do not need)."""
    from datasets import Dataset

    return {"test": Dataset.from_list(rows)}


@lru_cache(maxsize=1)
def _template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


@lru_cache(maxsize=1)
def _task_manager():
    from lm_eval.tasks import TaskManager

    # Only our folder: indexing lm-eval's ~28k built-in task files costs ~12 s per call.
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@metric("mcq_acc", options_on=ALL_ROLES)
def mcq_accuracy(scores: SplitScores) -> MetricResult:
    """Four-way multiple-choice accuracy (true answer against three wrong ones) through lm-eval."""
    rows = mcq_rows(scores)
    if not rows:
        raise NotComputed(f"no record of {scores.split.name} has perturbed_answer (the wrong choices)")
    template = _template()
    task = {**template, "task": f"{template['task']}_{scores.split.name}",
            "custom_dataset": functools.partial(_in_memory, rows)}
    output = evaluate_task_configs(scores.model, scores.tokenizer, scores.options.batch_size, [task], _task_manager(),
                                   scores.scored_index())
    samples = iter(sorted(output["samples"][task["task"]], key=lambda sample: sample["doc_id"]))
    per_example = [float(next(samples)["acc"]) if e.perturbed_answers else None for e in scores.split.questions]
    return MetricResult(output["results"][task["task"]]["acc,none"], per_example)
