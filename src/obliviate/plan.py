"""``plan(settings)``: everything an experiment will do, resolved and checked before any long work.

The plan reads config and small files only (data sets, a mask's names and shapes, a saved retain
evaluation), never model weights: the configured method and its objective, the prompt format, the training data,
the evaluated splits with their roles, where each model comes from (fine-tune recipes included), the mask, the
attacks, the evaluation, how unlearning trains, and what the run writes. Every bad input is a :class:`UserError`
here. A plan is the only input of the Unlearner (which reads no config), and evaluate.py, finetune.py, make_mask.py
and the study runner all start from one. Here, too, methods are composed: each gets its own section's values and
a resolver for the methods it wraps (:func:`configured_method`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from obliviate.attacks import AttackPlan, plan_attacks
from obliviate.config.sections import Lora
from obliviate.config.settings import Settings
from obliviate.data.examples import Example
from obliviate.data.sources import load_examples
from obliviate.data.tokenize import PromptFormat
from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.evaluation.declarations import reference_requirements
from obliviate.evaluation.during_training import BestRule
from obliviate.evaluation.lm_eval_tasks import check_tasks
from obliviate.evaluation.probes import probe_splits
from obliviate.evaluation.queries import EvalOptions
from obliviate.evaluation.reference import read_reference_run
from obliviate.evaluation.session import EvaluationPlan, RetainModel
from obliviate.evaluation.splits import PRIMARY_SPLITS, Split, parse_extra_split
from obliviate.loggers import RunOptions
from obliviate.masks.build import MaskRecipe, select_names
from obliviate.masks.mask import ParameterMask
from obliviate.methods import METHODS
from obliviate.methods.base import Method, ModelFacts
from obliviate.methods.objective import Objective
from obliviate.models.adapters import check_target_modules
from obliviate.models.loading import (
    ModelSource,
    load_model,
    model_depth,
    parameter_shapes,
    resolve_device,
    resolve_dtype,
    resolve_model,
    tokenizers_match,
)
from obliviate.report import RunDescription
from obliviate.training.finetune import FinetuneRecipe
from obliviate.training.schedule import TrainingConfig

logger = logging.getLogger(__name__)
EVALUATIONS = "evaluations"  # the results folder of evaluation-only runs, in place of a method's


def configured_method(settings: Settings, name: str) -> Method:
    """The registered method ``name`` configured by its own section ``unlearn.<Name>``; the methods it wraps are
    resolved the same way, each from its own section."""
    canonical = METHODS.canonical(name)
    return METHODS.get(canonical)(canonical, settings.method(canonical),
                                  lambda other: configured_method(settings, other))


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

    def load(self, source: ModelSource) -> tuple[torch.nn.Module, Any]:
        """The model and tokenizer of ``source`` on the plan's device and dtype."""
        return load_model(source, self.cache_dir, self.device, self.dtype)

    def retain_model(self, accelerator: Accelerator) -> RetainModel | None:
        """The retain model as the evaluation session reads it (fine-tuned and loaded only when needed)."""
        if self.retain is None:
            return None
        retain = self.retain
        return RetainModel(source=self.retain_source, load=lambda: self.load(self.build(retain, "retain", accelerator)))


@dataclass(frozen=True)
class MaskPlan:
    path: Path
    existing: ParameterMask | None  # loaded and checked against the model; None = build it with the recipe


@dataclass(frozen=True, kw_only=True)
class TrainingPlan:
    """How unlearning trains: the loop's keys, the seed, the batch size of reference quantities cached before
    training, and what happens along the way (evaluation points, checkpoints, the G-effect probe)."""

    config: TrainingConfig
    seed: int
    reference_batch_size: int
    eval_every: int
    eval_splits: list[str]
    save_every: int
    g_effect_every: int
    g_effect_definition: str


@dataclass(frozen=True, kw_only=True)
class OutputPlan:
    """What the run writes: its folder, the resolved config (config.json), and which models it saves."""

    logger: str  # the registered kind of run folder (overall.logger)
    folder: RunOptions
    config: dict[str, Any]
    save_model: bool  # the unlearned model (unlearn.save_model, or a merged LoRA adapter)
    save_best: bool  # the best checkpoint's weights (unlearn.save_model)
    merge: bool  # LoRA adapters merged into the weights after unlearning


@dataclass(frozen=True, kw_only=True)
class ExperimentPlan:
    method: Method | None  # None when only evaluating
    objective: Objective | None
    fmt: PromptFormat
    max_length: int
    data: dict[str, list[Example]]  # loaded data by split: forget, retain and the method's own
    training_data: dict[str, list[Example]]  # what the method trains on (ULD adds paraphrases)
    models: ModelPlan
    lora: Lora
    mask: MaskPlan | None
    mask_recipe: MaskRecipe
    attacks: AttackPlan | None
    evaluation: EvaluationPlan
    evaluate_before: bool
    evaluate_after: bool
    evaluated_model: FinetuneRecipe | ModelSource  # what an evaluation-only run evaluates (eval.model)
    evaluated_role: str  # its role: model_name, target or retain
    best: BestRule | None  # the best-checkpoint rule (unlearn.best_metric), if any
    training: TrainingPlan | None
    output: OutputPlan
    description: RunDescription

    def check_processes(self, num_processes: int, sharded: bool) -> None:
        """Refuse what does not run on ``num_processes`` processes (or sharded weights), before any work."""
        if self.models.target is not None:
            self.models.target.check_buildable(num_processes, "target")
        if sharded:
            raise UserError("FSDP/DeepSpeed shard the weights, and evaluation runs on the main process with the full "
                            "model; launch with configs/accelerate/ddp.yaml (one model per GPU)")
        if num_processes > 1 and self.training is not None and self.training.g_effect_every:
            raise UserError("unlearn.g_effect_every needs one process (its probe gradients are not synchronised); "
                            "launch without --num_processes or set it to 0")


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
    method = configured_method(s, s.unlearn.unlearn_method) if unlearning else None
    objective = method.objective() if method else None
    fmt = prompt_format(s.dataset.question_template, s.dataset.chat_template)
    data_dir = Path(s.dataset.data_dir)
    data = _training_data(s, method, data_dir)
    needed = (objective.splits if objective else set()) | (
        {"retain"} if s.finetune.enabled or (unlearning and s.unlearn.g_effect_every) else set())
    if missing := sorted(needed - set(data)):
        name = method.name if method else METHODS.canonical(s.unlearn.unlearn_method)
        raise UserError(f"{name} (or finetune.enabled, or unlearn.g_effect_every) needs {', '.join(missing)} data; "
                        f"set dataset.{missing[0]}_dataset_name")
    models = _models(s, fmt, data)
    evaluation = _evaluation(s, data, data_dir, models)
    common = {"fmt": fmt, "max_length": s.dataset.max_length, "data": data, "models": models, "lora": s.lora,
              "mask_recipe": _mask_recipe(s, models), "evaluation": evaluation, "evaluate_before": s.eval.before,
              "evaluate_after": s.eval.after, "evaluated_model": _evaluated_model(s, models),
              "evaluated_role": s.eval.model}
    if method is None:
        evaluated = common["evaluated_model"]
        name = (evaluated.source if isinstance(evaluated, FinetuneRecipe) else evaluated).name
        return ExperimentPlan(method=None, objective=None, training_data=data, mask=None, attacks=None, best=None,
                              training=None, output=_output(s, EVALUATIONS),
                              description=_description(s, evaluation, f"{s.eval.model}: {name}"), **common)
    if models.base.kind == "logit_difference":
        raise UserError(f"overall.model_name '{models.base.name}' is a ULD/Offset run folder, which evaluate.py "
                        "evaluates but cannot be unlearned again; unlearn its target model")
    _check_lora(s, models)
    method.check(_model_facts(s, models))
    if unused := sorted(s.given_method_sections() - method.sections()):
        logger.warning("unlearn.%s: set but not used by %s (it has no effect on this run)",
                       ", unlearn.".join(unused), method.name)
    return ExperimentPlan(
        method=method, objective=objective, training_data=method.training_data(data), mask=_mask(s, models, data),
        attacks=plan_attacks(s.attack, data["forget"], lambda name: load_examples(name, data_dir), fmt=fmt,
                             max_length=s.dataset.max_length, seed=s.overall.seed),
        best=_best_rule(s, evaluation), training=_training(s), output=_output(s, method.name),
        description=_description(s, evaluation, f"{method.name} unlearning of {models.target_source.name}"), **common)


def _model_facts(s: Settings, models: ModelPlan) -> ModelFacts:
    return ModelFacts(model_name=models.base.name, depth=model_depth(models.base, models.cache_dir),
                      parameter_names=list(parameter_shapes(models.base, models.cache_dir)),
                      masked=bool(s.unlearn.mask_path), lora=s.lora,
                      same_tokenizer=lambda name: tokenizers_match(resolve_model(name), models.base, models.cache_dir))


def _training(s: Settings) -> TrainingPlan:
    u = s.unlearn
    return TrainingPlan(config=TrainingConfig.of(u, batch_size=s.dataset.batch_size), seed=s.overall.seed,
                        reference_batch_size=s.eval.batch_size, eval_every=u.eval_every,
                        eval_splits=list(u.eval_splits), save_every=u.save_every, g_effect_every=u.g_effect_every,
                        g_effect_definition=u.g_effect_definition)


def _output(s: Settings, kind: str) -> OutputPlan:
    folder = RunOptions(root=Path(s.logger_json.root), task=s.unlearn.task_name, kind=kind, name=s.logger.name,
                        overwrite=s.logger.overwrite, tensorboard=s.logger.tensorboard, wandb=s.logger.wandb,
                        resume=s.logger.resume)
    return OutputPlan(logger=s.overall.logger, folder=folder, config=s.to_dict(),
                      save_model=s.unlearn.save_model or s.lora.merge, save_best=s.unlearn.save_model,
                      merge=s.lora.merge)


def _description(s: Settings, evaluation: EvaluationPlan, title: str) -> RunDescription:
    return RunDescription(title=title, model_name=s.overall.model_name, finetuned=s.finetune.enabled,
                          seed=s.overall.seed, metrics=list(s.eval.metrics), splits=evaluation.splits)


def _evaluated_model(s: Settings, models: ModelPlan) -> FinetuneRecipe | ModelSource:
    """What evaluate.py evaluates (eval.model): the base model as named, or the fine-tuned target or retain."""
    return {"model_name": models.base, "target": models.target, "retain": models.retain}[s.eval.model]


def _mask_recipe(s: Settings, models: ModelPlan) -> MaskRecipe:
    description = {"model": models.target_source.identity, "forget": s.dataset.forget_dataset_name,
                   "retain": s.dataset.retain_dataset_name}
    return MaskRecipe(options=s.mask, batch_size=s.dataset.batch_size, seed=s.overall.seed, description=description)


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


def _training_data(s: Settings, method: Method | None, data_dir: Path) -> dict[str, list[Example]]:
    """Forget and retain data, and the data the method reads besides (none for ``method`` None)."""
    d = s.dataset
    if not d.forget_dataset_name:
        raise UserError("dataset.forget_dataset_name is empty; name the data to forget")
    names = {"forget": d.forget_dataset_name, "retain": d.retain_dataset_name,
             **(method.datasets() if method else {})}
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
    options = EvalOptions(batch_size=e.batch_size, max_length=d.max_length, max_new_tokens=e.max_new_tokens,
                          work_dir=models.cache_dir, lm_eval_tasks=tuple(e.lm_eval_tasks), task_limit=e.max_examples,
                          knowmem_shots=_knowmem_shots(e.knowmem_shots, {split.name for split in splits}, data_dir))
    needs = reference_requirements(splits, e.metrics)
    retain_logs = read_reference_run(Path(e.retain_logs_path), needs) if e.retain_logs_path else None
    if needs.required_by and models.retain is None and retain_logs is None:
        raise UserError(f"eval.metrics {', '.join(sorted(needs.required_by))} need the retain model, and there is "
                        "none: set --finetune.enabled true, --eval.retain_model_name or --eval.retain_logs_path, "
                        "or drop those metrics")
    return EvaluationPlan(splits=splits, metrics=list(e.metrics), options=options, reference_needs=needs,
                          retain_logs=retain_logs)


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
