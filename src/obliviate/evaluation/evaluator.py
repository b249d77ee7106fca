"""Evaluate one model on role-carrying splits with the requested metrics, and the on-disk evaluation cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.examples import content_hash
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation.declarations import METRICS, MODEL_METRICS, ModelInputs, NotComputed
from obliviate.evaluation.lm_eval_tasks import task_accuracies
from obliviate.evaluation.queries import EvalOptions, SplitScores
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import Split
from obliviate.evaluation.spread import agreed, is_main
from obliviate.io import write_json_atomic

SCORING_VERSION = 2  # 2: truth ratio after the original question; no EOS after texts; EOS dropped in EM/ES/Min-K


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, splits: list[Split], fmt: PromptFormat,
             options: EvalOptions, metrics: list[str], reference: Evaluation | None = None) -> Evaluation:
    """Every requested metric on every split it applies to (by its declaration), then the model-level
    metrics they trigger, then lm-eval's tasks. A metric whose inputs are missing is recorded in
    ``not_computed`` with the reason, never dropped silently."""
    result = Evaluation()
    requested = [METRICS.get(name) for name in metrics]
    shared: dict = {}  # what metrics compute once for every split of this evaluation (e.g. the linear probes)
    for split in splits:
        scores = SplitScores(split, model, tokenizer, fmt, options, reference, shared,
                             score_options=any(declared.scores_options(split) for declared in requested))
        for declared in requested:
            if not declared.applies_to(split):
                continue
            try:
                result.record(split.name, declared.name, declared.compute(scores))
            except NotComputed as missing:
                result.not_computed[f"{split.name}.{declared.name}"] = str(missing)
    for declared in requested:
        if not any(declared.applies_to(split) for split in splits):
            roles = ", ".join(sorted(role.value for role in declared.roles))
            result.not_computed[declared.name] = (f"applies to {declared.reads} examples of a {roles} split, and no "
                                                  "evaluated split has them")
    add_model_metrics(result, splits, metrics, reference)
    if options.lm_eval_tasks:
        result.lm_eval = task_accuracies(model, tokenizer, list(options.lm_eval_tasks), options.batch_size,
                                         options.task_limit)
    return result


def add_model_metrics(evaluation: Evaluation, splits: list[Split], metrics: list[str],
                      reference: Evaluation | None) -> None:
    """The model-level metrics that ``metrics`` trigger, from the per-split results already in ``evaluation``."""
    inputs = ModelInputs(splits, evaluation, reference)
    for name, declared in MODEL_METRICS:
        if declared.triggered_by <= set(metrics):
            try:
                evaluation.model[name] = declared.compute(inputs)
            except NotComputed as missing:
                evaluation.not_computed[f"model.{name}"] = str(missing)


def evaluation_key(model_identity: str, splits: list[Split], fmt: PromptFormat, options: EvalOptions,
                   metrics: list[str], reference: Evaluation | None) -> dict[str, Any]:
    """What determines an evaluation's numbers: the model, the data with roles, the options, the metrics
    and their versions, and the retain reference."""
    reference_digest = None if reference is None else hashlib.sha256(
        json.dumps(reference.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return {"version": SCORING_VERSION, "model": model_identity,
            "metrics": {name: METRICS.get(name).version for name in sorted(metrics)},
            "model_metrics": {name: declared.version for name, declared in MODEL_METRICS},
            "splits": {s.name: [s.role.value, s.primary, content_hash(list(s.examples))] for s in splits},
            "options": options.cache_key(), "format": asdict(fmt), "reference": reference_digest}


def cached_evaluation(cache_dir: Path, key: dict[str, Any], compute: Callable[[], Evaluation]) -> Evaluation:
    """Return the evaluation stored under ``key`` (see :func:`evaluation_key`), computing and storing it on a miss."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    file = cache_dir / "evaluations" / f"{digest}.json"
    if agreed(file.is_file()):  # every process reads it, or every process computes it (divided between them)
        return Evaluation.from_dict(json.loads(file.read_text())["evaluation"])
    evaluation = compute()
    if is_main():
        write_json_atomic(file, {"key": key, "evaluation": evaluation.to_dict()})
    return evaluation
