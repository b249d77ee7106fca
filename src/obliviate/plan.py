"""``plan(settings)``: everything an experiment will do, resolved and checked before any long work.

The plan reads config and small files only (data sets, a mask's names and shapes, a saved retain
evaluation), never model weights: the method's objective, the prompt format, the training data, the
evaluated splits with their roles, where each model comes from (fine-tune recipes included), the mask,
the attacks and the evaluation. Every bad input is a :class:`UserError` here. The Unlearner, evaluate.py,
finetune.py, make_mask.py and the study runner all start from a plan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from obliviate.attacks import Attack, plan_attacks
from obliviate.config.settings import Settings
from obliviate.data.examples import Example
from obliviate.data.sources import load_examples
from obliviate.data.tokenize import PromptFormat
from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.evaluation.declarations import Requirements, reference_requirements
from obliviate.evaluation.during_training import BestRule
from obliviate.evaluation.lm_eval_tasks import check_tasks
from obliviate.evaluation.probes import probe_splits
from obliviate.evaluation.queries import EvalOptions
from obliviate.evaluation.reference import read_reference_run
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.splits import PRIMARY_SPLITS, Split, parse_extra_split
from obliviate.masks.build import select_names
from obliviate.masks.mask import ParameterMask
from obliviate.methods import METHODS
from obliviate.methods.base import Objective
from obliviate.methods.logit_difference import logit_difference_method
from obliviate.models.adapters import check_target_modules
from obliviate.models.finetune import FinetuneRecipe
from obliviate.models.loading import (
    ModelSource,
    model_depth,
    parameter_shapes,
    resolve_device,
    resolve_dtype,
    resolve_model,
    tokenizers_match,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPlan:
    """Where the models come from: the base, the target (fine-tuned from the base, or the base itself) and
    the retain model (the oracle of forget quality and the other reference metrics), on which device."""

    base: ModelSource
    target: FinetuneRecipe | None
    retain: FinetuneRecipe | ModelSource | None
    device: torch.device
    dtype: torch.dtype
    cache_dir: Path

    @property
    def target_source(self) -> ModelSource:
        return self.target.source if self.target is not None else self.base

    @property
    def retain_source(self) -> ModelSource | None:
        return self.retain.source if isinstance(self.retain, FinetuneRecipe) else self.retain

    def build(self, model: FinetuneRecipe | ModelSource, role: str, accelerator: Accelerator) -> ModelSource:
        """The model's source, fine-tuning it first when it is a recipe not yet in the cache."""
        if isinstance(model, FinetuneRecipe):
            return model.build(self.cache_dir, self.device, self.dtype, accelerator, role)
        return model


@dataclass(frozen=True)
class MaskPlan:
    path: Path
    existing: ParameterMask | None  # loaded and checked against the model; None = build it from settings.mask


@dataclass(frozen=True)
class EvaluationPlan:
    splits: list[Split]
    metrics: list[str]
    options: EvalOptions
    reference_needs: Requirements  # what the metrics need from the retain model's evaluation
    retain_logs: Evaluation | None  # that evaluation read from eval.retain_logs_path

    def split(self, name: str) -> Split:
        return next(split for split in self.splits if split.name == name)


@dataclass(frozen=True)
class ExperimentPlan:
    settings: Settings
    method: str
    objective: Objective | None  # None when only evaluating
    fmt: PromptFormat
    data: dict[str, list[Example]]  # loaded data by split: forget, retain and the method's own
    training_data: dict[str, list[Example]]  # what the method trains on (ULD adds paraphrases)
    models: ModelPlan
    mask: MaskPlan | None
    attacks: list[Attack]
    evaluation: EvaluationPlan
    best: BestRule | None = None  # the best-checkpoint rule (unlearn.best_metric), if any


def prompt_format(template: str, chat: bool) -> PromptFormat:
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError):
        raise UserError(f"dataset.question_template {template!r} may only use the field {{question}}; "
                        "escape other braces as {{ }}") from None
    if "{question}" not in template:
        raise UserError(f"dataset.question_template {template!r} must contain {{question}}")
    return PromptFormat(template, chat)


def plan(settings: Settings, unlearning: bool = True) -> ExperimentPlan:
    """Resolve and check every part of the experiment ``settings`` describe (see the module docstring); with
    ``unlearning`` false (evaluate.py) the method, its data, the mask and the attacks are left out."""
    s = settings
    method = METHODS.canonical(s.unlearn.unlearn_method)
    objective = METHODS.get(method).objective(s, method) if unlearning else None
    fmt = prompt_format(s.dataset.question_template, s.dataset.chat_template)
    data_dir = Path(s.dataset.data_dir)
    data = _training_data(s, method if unlearning else None, data_dir)
    needed = (objective.splits if objective else set()) | (
        {"retain"} if s.finetune.enabled or (unlearning and s.unlearn.g_effect_every) else set())
    if missing := sorted(needed - set(data)):
        raise UserError(f"{method} (or finetune.enabled, or unlearn.g_effect_every) needs {', '.join(missing)} data; "
                        f"set dataset.{missing[0]}_dataset_name")
    models = _models(s, fmt, data)
    evaluation = _evaluation(s, data, data_dir, models)
    if not unlearning:
        return ExperimentPlan(s, method, None, fmt, data, data, models, None, [], evaluation)
    if models.base.kind == "logit_difference":
        raise UserError(f"overall.model_name '{models.base.name}' is a ULD/Offset run folder, which evaluate.py "
                        "evaluates but cannot be unlearned again; unlearn its target model")
    _check_lora(s, models)
    _check_logit_difference(s, method, models)
    METHODS.get(method).check_depth(s, method, model_depth(models.base, models.cache_dir))
    if unused := sorted(s.given_method_sections() - METHODS.get(method).sections(s, method)):
        logger.warning("unlearn.%s: set but not used by %s (it has no effect on this run)",
                       ", unlearn.".join(unused), method)
    training_data = METHODS.get(method).training_data(s, method, data)
    return ExperimentPlan(s, method, objective, fmt, data, training_data, models, _mask(s, models, data),
                          plan_attacks(s.attack, data["forget"], lambda name: load_examples(name, data_dir)),
                          evaluation, _best_rule(s, evaluation))


def _best_rule(s: Settings, evaluation: EvaluationPlan) -> BestRule | None:
    """Check the evaluation-during-unlearning keys; the best-checkpoint rule if one is declared."""
    u = s.unlearn
    if not u.eval_every:
        if u.best_metric or u.best_constraint:
            raise UserError("unlearn.best_metric/best_constraint select among evaluations during unlearning; set "
                            "unlearn.eval_every (e.g. 5)")
        return None
    evaluated = [split.name for split in evaluation.splits]
    if unknown := [name for name in u.eval_splits if name not in evaluated]:
        raise UserError(f"unlearn.eval_splits names '{unknown[0]}', which is not evaluated; use some of "
                        f"{', '.join(evaluated)}")
    if not u.eval_splits:
        raise UserError("unlearn.eval_splits is empty; name the splits to evaluate during unlearning (e.g. forget)")
    if not u.best_metric:
        if u.best_constraint:
            raise UserError("unlearn.best_constraint needs unlearn.best_metric (what to optimise)")
        return None
    return BestRule.parse(u.best_metric, u.best_goal, u.best_constraint, list(u.eval_splits), evaluation.metrics)


def _training_data(s: Settings, method: str | None, data_dir: Path) -> dict[str, list[Example]]:
    """Forget and retain data, and the data the method reads besides (none for ``method`` None)."""
    d = s.dataset
    if not d.forget_dataset_name:
        raise UserError("dataset.forget_dataset_name is empty; name the data to forget")
    names = {"forget": d.forget_dataset_name, "retain": d.retain_dataset_name,
             **(METHODS.get(method).datasets(s, method) if method else {})}
    return {split: load_examples(name, data_dir) for split, name in names.items() if name}


def _models(s: Settings, fmt: PromptFormat, data: dict[str, list[Example]]) -> ModelPlan:
    base = resolve_model(s.overall.model_name)
    device = resolve_device(s.overall.device)
    cache_dir = Path(s.overall.cache_dir)

    def recipe(examples: list[Example]) -> FinetuneRecipe:
        return FinetuneRecipe(base, examples, s.finetune, fmt, s.dataset.max_length, cache_dir)

    if s.eval.model != "model_name" and not s.finetune.enabled:
        raise UserError(f"eval.model {s.eval.model} needs the fine-tuned models: pass --finetune.enabled true, or "
                        "evaluate a model by name with --eval.model model_name")
    target = recipe(data["forget"] + data.get("retain", [])) if s.finetune.enabled else None
    if s.finetune.enabled:
        retain: FinetuneRecipe | ModelSource | None = recipe(data["retain"])
    else:
        retain = resolve_model(s.eval.retain_model_name) if s.eval.retain_model_name else None
    return ModelPlan(base, target, retain, device, resolve_dtype(s.overall.dtype, device), cache_dir)


def _evaluation(s: Settings, data: dict[str, list[Example]], data_dir: Path, models: ModelPlan) -> EvaluationPlan:
    e, d = s.eval, s.dataset
    names = {"forget": d.forget_dataset_name, "retain": d.retain_dataset_name, "holdout": d.holdout_dataset_name,
             "real_authors": d.real_authors_dataset_name, "world_facts": d.world_facts_dataset_name}
    splits = [Split(name, PRIMARY_SPLITS[name], tuple(data.get(name) or load_examples(dataset, data_dir)), True)
              for name, dataset in names.items() if dataset]
    extra = [parse_extra_split(entry) for entry in e.extra_splits]
    if len({name for name, _, _ in extra}) != len(extra):
        raise UserError("eval.extra_splits names a split twice; give each extra split its own name")
    splits += [Split(name, role, tuple(load_examples(dataset, data_dir))) for name, role, dataset in extra]
    splits = [split.limited(e.max_examples) for split in splits]
    if e.probes:
        by_name = {split.name: split for split in splits}
        if "forget" not in by_name:
            raise UserError("eval.probes rephrase the forget split, and none is evaluated; set "
                            "dataset.forget_dataset_name or drop eval.probes")
        splits += probe_splits(by_name["forget"], by_name.get("retain"), list(e.probes))
    for name in e.metrics:
        if check := METRICS.get(name).setup_check:
            check()
    if e.lm_eval_tasks:
        check_tasks(e.lm_eval_tasks)
    options = EvalOptions(e.batch_size, d.max_length, e.max_new_tokens, models.cache_dir, tuple(e.lm_eval_tasks),
                          e.max_examples, _knowmem_shots(e.knowmem_shots, {split.name for split in splits}, data_dir))
    needs = reference_requirements(splits, e.metrics)
    retain_logs = read_reference_run(Path(e.retain_logs_path), needs) if e.retain_logs_path else None
    if needs.required_by and models.retain is None and retain_logs is None:
        raise UserError(f"eval.metrics {', '.join(sorted(needs.required_by))} need the retain model, and there is "
                        "none: set --finetune.enabled true, --eval.retain_model_name or --eval.retain_logs_path, "
                        "or drop those metrics")
    return EvaluationPlan(splits, list(e.metrics), options, needs, retain_logs)


def _knowmem_shots(entries: list[str], split_names: set[str], data_dir: Path) -> dict[str, tuple[Example, ...]]:
    """``eval.knowmem_shots`` as split ('' = every split) -> in-context examples."""
    shots: dict[str, tuple[Example, ...]] = {}
    for entry in entries:
        split, _, dataset = entry.rpartition("=")
        if split and split not in split_names:
            raise UserError(f"eval.knowmem_shots entry {entry!r} names split '{split}', which is not evaluated; "
                            f"splits: {', '.join(sorted(split_names))}")
        examples = load_examples(dataset.strip(), data_dir)
        if any(example.is_text for example in examples):
            raise UserError(f"eval.knowmem_shots: '{dataset}' holds texts; KnowMem's examples are questions with "
                            "answers")
        shots[split.strip()] = tuple(examples)
    return shots


def _check_lora(s: Settings, models: ModelPlan) -> None:
    """LoRA's target modules exist in the model (no weights loaded); a mask and LoRA are not combined."""
    if not s.lora.enabled:
        return
    if s.unlearn.mask_path:
        raise UserError("unlearn.mask_path selects base weights, which LoRA freezes (only adapters train); drop the "
                        "mask or set --lora.enabled false")
    check_target_modules(s.lora, list(parameter_shapes(models.base, models.cache_dir)))


def _check_logit_difference(s: Settings, method: str, models: ModelPlan) -> None:
    """ULD/Offset: the assistant fits the target (depth, tokenizer), and no option asks to train the target."""
    if logit_difference_method(method) is None:
        return
    if s.unlearn.mask_path:
        raise UserError(f"{method} trains an assistant, never the target's weights that unlearn.mask_path selects; "
                        "drop the mask")
    if s.lora.merge:
        raise UserError(f"lora.merge: {method}'s assistant shares the target's weights, so its adapter stays "
                        "separate; set --lora.merge false")
    check_target_modules(s.lora, list(parameter_shapes(models.base, models.cache_dir)))
    values = s.method(method)
    if values.get("assistant"):
        assistant = resolve_model(values["assistant"])
        if not tokenizers_match(assistant, models.base, models.cache_dir):
            raise UserError(f"unlearn.{method}.assistant '{assistant.name}' has a different tokenizer from the target "
                            f"'{models.base.name}'; the logits must index the same tokens: use a model of the same "
                            "family, or '' (the target's first layers)")
        return
    depth = model_depth(models.base, models.cache_dir)
    if values["num_layers"] > depth:
        raise UserError(f"unlearn.{method}.num_layers is {values['num_layers']} but the target has {depth} layers; "
                        f"use 1 to {depth}")


def _mask(s: Settings, models: ModelPlan, data: dict[str, list[Example]]) -> MaskPlan | None:
    """Load an existing mask and check it against the model's parameters (no weights loaded), or check that
    the mask section can build one."""
    if not s.unlearn.mask_path:
        return None
    path = Path(s.unlearn.mask_path)
    if path.is_dir():
        raise UserError(f"unlearn.mask_path '{path}' is a folder; name a mask file (.safetensors) in it")
    shapes = parameter_shapes(models.base, models.cache_dir)
    if path.exists():
        mask = ParameterMask.load(path)
        mask.check(shapes, f"'{path}'")
        return MaskPlan(path, mask)
    select_names(list(shapes), s.mask.include, s.mask.exclude)
    if s.mask.score == "wagle" and "retain" not in data:
        raise UserError("mask.score wagle needs retain data; set dataset.retain_dataset_name")
    return MaskPlan(path, None)
