"""An experiment's evaluations: before and after unlearning, at the points of each fine-tune attack, and the
retain model's evaluation that other metrics read (forget quality, PrivLeak, the reference attack).

Evaluations of a model with a known identity (the target, the retain model) are cached on disk by
:func:`~obliviate.evaluation.evaluator.evaluation_key`; the unlearned model is evaluated afresh.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation.declarations import Requirements
from obliviate.evaluation.evaluator import cached_evaluation, evaluate, evaluation_key
from obliviate.evaluation.queries import EvalOptions
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import Role, Split
from obliviate.models.loading import ModelSource

TASK_METRIC = "exact_match"  # a downstream attack task's own accuracy
LoadedModel = tuple[PreTrainedModel, PreTrainedTokenizerBase]


@dataclass(frozen=True, kw_only=True)
class EvaluationPlan:
    """What every evaluation of the experiment computes: the splits, the metrics and their options, what the
    metrics need from the retain model's evaluation, and that evaluation when read from eval.retain_logs_path."""

    splits: list[Split]
    metrics: list[str]
    options: EvalOptions
    reference_needs: Requirements
    retain_logs: Evaluation | None

    def split(self, name: str) -> Split:
        return next(split for split in self.splits if split.name == name)


@dataclass(frozen=True, kw_only=True)
class RetainModel:
    """The retain (oracle) model the reference metrics read: its identity (the cache key) and how to get it loaded
    (fine-tuned first on a cache miss of a recipe)."""

    source: ModelSource
    load: Callable[[], LoadedModel]


class EvaluationSession:
    """Evaluates models as ``plan`` says, caching evaluations of known models in ``cache_dir``."""

    def __init__(self, plan: EvaluationPlan, fmt: PromptFormat, cache_dir: Path, retain: RetainModel | None) -> None:
        self.plan, self.fmt, self.cache_dir, self.retain = plan, fmt, cache_dir, retain
        self._reference: list[Evaluation | None] = []  # computed once, on first use

    def reference(self) -> Evaluation | None:
        """The retain model's evaluation on what the metrics need (None when they need nothing): read from
        eval.retain_logs_path, or evaluated (cached; the retain model is fine-tuned only on a cache miss)."""
        if not self._reference:
            self._reference.append(self._retain_evaluation())
        return self._reference[0]

    def _retain_evaluation(self) -> Evaluation | None:
        needs = self.plan.reference_needs
        if self.plan.retain_logs is not None or not needs.by_split or self.retain is None:
            return self.plan.retain_logs
        splits = [split for split in self.plan.splits if split.name in needs.by_split]

        def compute() -> Evaluation:  # build (fine-tune) and load only on a cache miss
            model, tokenizer = self.retain.load()
            return evaluate(model, tokenizer, splits, self.fmt, self.plan.options, needs.metrics)

        key = evaluation_key(self.retain.source.identity, splits, self.fmt, self.plan.options, needs.metrics, None)
        evaluation = cached_evaluation(self.cache_dir, key, compute)
        gc.collect()
        return evaluation

    def evaluate(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 source: ModelSource | None = None) -> Evaluation:
        """Every split and metric of the plan; cached under ``source``'s identity when given."""
        def compute() -> Evaluation:
            return evaluate(model, tokenizer, self.plan.splits, self.fmt, self.plan.options, self.plan.metrics,
                            self.reference())

        if source is None:
            return compute()
        key = evaluation_key(source.identity, self.plan.splits, self.fmt, self.plan.options, self.plan.metrics,
                             self.reference())
        return cached_evaluation(self.cache_dir, key, compute)

    def during_training(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, names: list[str]
                        ) -> dict[str, dict]:
        """The plan's metrics on the splits ``names`` (no lm-eval tasks): one point of the evaluation during
        unlearning."""
        options = replace(self.plan.options, lm_eval_tasks=())
        evaluation = evaluate(model, tokenizer, [self.plan.split(name) for name in names], self.fmt, options,
                              self.plan.metrics, self.reference())
        return {name: evaluation.splits.get(name, {}) for name in names}

    def forget_metrics(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       examples: tuple[Example, ...] | None = None, with_tasks: bool = False) -> dict:
        """The plan's metrics on the forget split (or on some of its ``examples``), with lm-eval's tasks (e.g.
        WMDP accuracy) when ``with_tasks``: one point of a fine-tune attack's curve."""
        forget = self.plan.split("forget")
        if examples is not None:
            forget = replace(forget, examples=examples)
        options = self.plan.options if with_tasks else replace(self.plan.options, lm_eval_tasks=())
        evaluation = evaluate(model, tokenizer, [forget], self.fmt, options, self.plan.metrics, self.reference())
        return {**evaluation.splits.get("forget", {}), **evaluation.lm_eval}

    def task_accuracy(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      test: list[Example]) -> dict:
        """A downstream task's own accuracy (``exact_match`` of greedy answers) on its test examples."""
        task = Split("task", Role.TASK, tuple(test[:self.plan.options.task_limit or None]))
        return evaluate(model, tokenizer, [task], self.fmt, self.plan.options, [TASK_METRIC]).splits.get("task", {})
