"""Evaluate one model on named splits with the selected metrics, with an on-disk cache by content."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation import METRICS
from obliviate.evaluation.lm_eval_tasks import task_accuracies
from obliviate.evaluation.metrics import EvalOptions, SplitScores
from obliviate.evaluation.model_level import add_model_metrics
from obliviate.evaluation.reference import RetainReference
from obliviate.io import write_json_atomic


LM_EVAL = "lm_eval"  # metrics[LM_EVAL][task] = accuracy of lm-eval's own tasks


@dataclass
class Evaluation:
    """``metrics[split][metric]`` aggregates and ``per_example[split][metric]`` values."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    per_example: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "per_example": self.per_example}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        return cls(data["metrics"], data["per_example"])


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, splits: dict[str, list[Example]],
             fmt: PromptFormat, options: EvalOptions, metrics: list[str],
             reference: RetainReference | None = None) -> Evaluation:
    """Every requested metric that applies, on every split (``forget``, ``retain``, ``holdout``, ...)."""
    result = Evaluation()
    for split, examples in splits.items():
        scores = SplitScores(split, examples, model, tokenizer, fmt, options, reference)
        result.metrics[split], result.per_example[split] = {}, {}
        for name in metrics:
            value = METRICS.get(name)(scores)
            if value is not None:
                result.metrics[split][name] = value.value
                result.per_example[split][name] = value.per_example
    add_model_metrics(result.metrics, result.per_example, reference.min_k_auc if reference else None)
    if options.lm_eval_tasks:
        result.metrics[LM_EVAL] = task_accuracies(model, tokenizer, list(options.lm_eval_tasks), options.batch_size,
                                                  options.task_limit)
    return result


def cached_evaluation(cache_dir: Path, key: dict[str, Any], compute: Callable[[], Evaluation]) -> Evaluation:
    """Return the evaluation stored under ``key`` (a JSON-able description of model, data and options),
    computing and storing it on a miss."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    file = cache_dir / "evaluations" / f"{digest}.json"
    if file.is_file():
        return Evaluation.from_dict(json.loads(file.read_text())["evaluation"])
    evaluation = compute()
    write_json_atomic(file, {"key": key, "evaluation": evaluation.to_dict()})
    return evaluation
