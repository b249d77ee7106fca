"""Multiple-choice accuracy through lm-eval on the in-process model (no reload from disk).

A split's examples with wrong answers become four-way questions (the true answer, or its paraphrase
when the wrong answers are perturbations of the paraphrase as in TOFU, and up to three wrong ones, in a
seeded order); they are written as JSONL and evaluated with the task template
``lm-evaluation-harness/obliviate/qa_mcq.yaml`` (log-likelihood of each choice, metric ``acc``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from functools import lru_cache
from pathlib import Path

import yaml

from obliviate.evaluation.metrics import METRICS, MetricResult, SplitScores

TASKS_DIR = Path(__file__).resolve().parents[3] / "lm-evaluation-harness"
TEMPLATE = TASKS_DIR / "obliviate" / "qa_mcq.yaml"
MAX_CHOICES = 4


def mcq_rows(scores: SplitScores) -> list[dict]:
    """prompt / choices / label rows for the examples that have wrong answers."""
    rows = []
    for example in scores.examples:
        if not example.perturbed_answers:
            continue
        # TOFU-layout wrong answers paraphrase the paraphrased answer: compare like with like.
        correct = example.paraphrased_answer or example.answer
        choices = [correct, *example.perturbed_answers[: MAX_CHOICES - 1]]
        random.Random(example.question).shuffle(choices)
        rows.append({"prompt": scores.prompt(example.question), "choices": choices, "label": choices.index(correct)})
    return rows


@lru_cache(maxsize=1)
def _task_manager():
    from lm_eval.tasks import TaskManager

    # Only our folder: indexing lm-eval's ~28k built-in task files costs ~12 s per call.
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@METRICS.register("mcq_acc")
def mcq_accuracy(scores: SplitScores) -> MetricResult | None:
    rows = mcq_rows(scores)
    if not rows:
        return None
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    content = "".join(json.dumps(row) + "\n" for row in rows)
    folder = scores.options.work_dir / "mcq"
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{hashlib.sha256(content.encode()).hexdigest()[:16]}.jsonl"
    if not data_file.is_file():
        data_file.write_text(content)
    task = yaml.safe_load(TEMPLATE.read_text())
    task["task"] = f"{task['task']}_{scores.split}"
    task["dataset_kwargs"]["data_files"]["test"] = str(data_file.resolve())
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=scores.model, tokenizer=scores.tokenizer, batch_size=scores.options.batch_size)
    output = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=_task_manager(), log_samples=True,
                                     bootstrap_iters=0, verbosity="ERROR")
    samples = sorted(output["samples"][task["task"]], key=lambda sample: sample["doc_id"])
    per_example = [float(sample["acc"]) for sample in samples]
    return MetricResult(output["results"][task["task"]]["acc,none"], per_example)
