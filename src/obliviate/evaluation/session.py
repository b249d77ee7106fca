"""An experiment's evaluations: before and after unlearning, at the points of each fine-tune attack, and the
retain model's evaluation that other metrics read (forget quality, PrivLeak, the reference attack).

Evaluations of a model with a known identity (the target, the retain model) are cached on disk by
:func:`~obliviate.evaluation.evaluator.evaluation_key`; the unlearned model is evaluated afresh.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.attacks import RELEARN, Attack
from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation.evaluator import cached_evaluation, evaluate, evaluation_key
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import Role, Split
from obliviate.models.loading import ModelSource, load_model

if TYPE_CHECKING:
    from obliviate.models.finetune import FinetuneRecipe
    from obliviate.plan import EvaluationPlan, ModelPlan

TASK_METRIC = "exact_match"  # a downstream attack task's own accuracy


class EvaluationSession:
    """Evaluates models as ``plan`` says; ``build(recipe_or_source, role)`` makes a fine-tuned model on demand."""

    def __init__(self, plan: "EvaluationPlan", fmt: PromptFormat, models: "ModelPlan",
                 build: Callable[["FinetuneRecipe | ModelSource", str], ModelSource]) -> None:
        self.plan, self.fmt, self.models, self.build = plan, fmt, models, build
        self._reference: list[Evaluation | None] = []  # computed once, on first use
        self._unlearned_forget: dict | None = None  # the forget metrics of the unlearned weights, once per run

    def reference(self) -> Evaluation | None:
        """The retain model's evaluation on what the metrics need (None when they need nothing): read from
        eval.retain_logs_path, or evaluated (cached; the retain model is fine-tuned only on a cache miss)."""
        if not self._reference:
            self._reference.append(self._retain_evaluation())
        return self._reference[0]

    def _retain_evaluation(self) -> Evaluation | None:
        needs = self.plan.reference_needs
        if self.plan.retain_logs is not None or not needs.by_split or self.models.retain is None:
            return self.plan.retain_logs
        retain, source = self.models.retain, self.models.retain_source
        splits = [split for split in self.plan.splits if split.name in needs.by_split]

        def compute() -> Evaluation:  # build (fine-tune) and load only on a cache miss
            model, tokenizer = load_model(self.build(retain, "retain"), self.models.cache_dir, self.models.device,
                                          self.models.dtype)
            return evaluate(model, tokenizer, splits, self.fmt, self.plan.options, needs.metrics)

        key = evaluation_key(source.identity, splits, self.fmt, self.plan.options, needs.metrics, None)
        evaluation = cached_evaluation(self.models.cache_dir, key, compute)
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
        return cached_evaluation(self.models.cache_dir, key, compute)

    def during_training(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, names: list[str]
                        ) -> dict[str, dict]:
        """The plan's metrics on the splits ``names`` (no lm-eval tasks): one point of the evaluation during
        unlearning."""
        options = replace(self.plan.options, lm_eval_tasks=())
        evaluation = evaluate(model, tokenizer, [self.plan.split(name) for name in names], self.fmt, options,
                              self.plan.metrics, self.reference())
        return {name: evaluation.splits.get(name, {}) for name in names}

    def attack_point(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, attack: Attack,
                     unlearned: bool) -> dict:
        """The forget metrics (and lm-eval's tasks, e.g. WMDP accuracy) at one point of an attack; for a
        relearning attack on a slice, also the forget examples outside it (``forget_unseen``: knowledge that
        comes back there was not simply trained in again); and the attack task's own accuracy. Every attack
        starts from the same ``unlearned`` weights, so their forget metrics are computed once and reused."""
        forget = self.plan.split("forget")
        if not unlearned:
            metrics = self._forget_metrics(model, tokenizer, forget, with_tasks=True)
        else:
            if self._unlearned_forget is None:
                self._unlearned_forget = self._forget_metrics(model, tokenizer, forget, with_tasks=True)
            metrics = self._unlearned_forget
        point = {"forget": dict(metrics)}
        trained = set(attack.train)
        unseen = [e for e in forget.examples if e not in trained]
        if attack.name == RELEARN and 0 < len(unseen) < len(forget.examples):
            point["forget_unseen"] = self._forget_metrics(model, tokenizer, replace(forget, examples=tuple(unseen)))
        if attack.test:
            task = Split("task", Role.TASK, tuple(attack.test[:self.plan.options.task_limit or None]))
            point["task"] = evaluate(model, tokenizer, [task], self.fmt, self.plan.options,
                                     [TASK_METRIC]).splits.get("task", {})
        return point

    def _forget_metrics(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, forget: Split,
                        with_tasks: bool = False) -> dict:
        options = self.plan.options if with_tasks else replace(self.plan.options, lm_eval_tasks=())
        evaluation = evaluate(model, tokenizer, [forget], self.fmt, options, self.plan.metrics, self.reference())
        return {**evaluation.splits.get("forget", {}), **evaluation.lm_eval}
