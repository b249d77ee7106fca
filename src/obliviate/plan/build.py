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
from pathlib import Path

import torch

from obliviate.attacks import plan_attacks
from obliviate.config.settings import Settings
from obliviate.data.sources import load_examples
from obliviate.errors import UserError
from obliviate.evaluation.session import EvaluationPlan
from obliviate.loggers import RunOptions
from obliviate.methods import METHODS
from obliviate.methods.base import Method
from obliviate.models.loading import ModelSource
from obliviate.plan.evaluation import best_rule, evaluation_plan, prompt_format
from obliviate.plan.records import ExperimentPlan, ModelPlan, OutputPlan, TrainingPlan
from obliviate.plan.sequence import sequence_stages
from obliviate.plan.sources import (
    check_lora,
    check_sharding,
    mask_plan,
    mask_recipe,
    model_facts,
    model_plan,
    training_data,
)
from obliviate.plan.warnings import announced, foreign_mask, truncation, working_directory
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


def plan(settings: Settings, unlearning: bool = True) -> ExperimentPlan:
    """Resolve and check every part of the experiment ``settings`` describe (see the module docstring); with
    ``unlearning`` false (evaluate.py) the method, its data, the mask and the attacks are left out."""
    s = settings
    method = configured_method(s, s.unlearn.unlearn_method) if unlearning else None
    objective = method.objective() if method else None
    fmt = prompt_format(s.dataset.question_template, s.dataset.chat_template)
    data_dir = Path(s.dataset.data_dir)
    data = training_data(s, method, data_dir)
    needed = (objective.splits if objective else set()) | (
        {"retain"} if s.finetune.enabled or (unlearning and s.unlearn.g_effect_every) else set())
    if missing := sorted(needed - set(data)):
        name = method.name if method else METHODS.canonical(s.unlearn.unlearn_method)
        raise UserError(f"{name} (or finetune.enabled, or unlearn.g_effect_every) needs {', '.join(missing)} data; "
                        f"set dataset.{missing[0]}_dataset_name")
    models = model_plan(s, fmt, data)
    stages = sequence_stages(s, method, data, data_dir)
    evaluation = evaluation_plan(s, data, data_dir, models, unlearning, [stage.forget for stage in stages])
    splits = {**{split.name: list(split.examples) for split in evaluation.splits}, **data}  # all that trains
    common = {"fmt": fmt, "max_length": s.dataset.max_length, "data": data, "models": models, "lora": s.lora,
              "mask_recipe": mask_recipe(s, models), "evaluation": evaluation, "evaluate_before": s.eval.before,
              "evaluate_after": s.eval.after, "evaluated_model": _evaluated_model(s, models),
              "evaluated_role": s.eval.model, "nonfinite_advice": _nonfinite_advice(s, models),
              "warnings": truncation(models, fmt, s.dataset.max_length, splits)
              + working_directory(s)}
    if method is None:
        evaluated = common["evaluated_model"]
        name = (evaluated.source if isinstance(evaluated, FinetuneRecipe) else evaluated).name
        return ExperimentPlan(method=None, objective=None, training_data=data, sequence=(), mask=None, attacks=None,
                              best=None,
                              training=None, output=_output(s, EVALUATIONS, set()),
                              description=_description(s, evaluation, f"{s.eval.model}: {name}"),
                              **{**common, "warnings": announced(common["warnings"])})
    if models.base.kind == "logit_difference":
        raise UserError(f"overall.model_name '{models.base.name}' is a ULD/Offset run folder, which evaluate.py "
                        "evaluates but cannot be unlearned again; unlearn its target model")
    check_lora(s, models)
    method.check(model_facts(s, models))
    if unused := sorted(s.given_method_sections() - method.sections()):
        logger.warning("unlearn.%s: set but not used by %s (it has no effect on this run)",
                       ", unlearn.".join(unused), method.name)
    attacks = plan_attacks(s.attack, data["forget"], lambda name: load_examples(name, data_dir), fmt=fmt,
                           max_length=s.dataset.max_length, seed=s.overall.seed)
    check_sharding(s, objective, attacks)
    mask = mask_plan(s, models, data)
    common["warnings"] = announced(
        common["warnings"] + foreign_mask(mask and mask.existing, models, Path(s.unlearn.mask_path)))
    return ExperimentPlan(
        method=method, objective=objective, training_data=method.training_data(data), sequence=stages, mask=mask,
        attacks=attacks,
        best=best_rule(s, evaluation), training=_training(s), output=_output(s, method.name, method.sections()),
        description=_description(s, evaluation, f"{method.name} unlearning of {models.target_source.name}"), **common)


def _training(s: Settings) -> TrainingPlan:
    u = s.unlearn
    return TrainingPlan(config=TrainingConfig.of(u, batch_size=s.dataset.batch_size), seed=s.overall.seed,
                        reference_batch_size=s.eval.batch_size, eval_every=u.eval_every,
                        eval_splits=list(u.eval_splits), save_every=u.save_every, g_effect_every=u.g_effect_every,
                        g_effect_definition=u.g_effect_definition)


def _nonfinite_advice(s: Settings, models: ModelPlan) -> str:
    """What to change when a training step's loss or gradient is not finite."""
    if models.dtype == torch.float16 and models.device.type == "cpu":
        return ("overall.dtype float16 on CPU trains without loss scaling and overflows, whatever the learning rate: "
                "use --overall.dtype float32 (or bfloat16)")
    return "lower that stage's learning rate (unlearn.lr, finetune.lr or attack.lr) or check the data"


def _recorded_config(s: Settings, used_sections: set[str]) -> dict:
    """config.json: every key, but of the method sections only those the run reads (the others change nothing,
    and ``-C <run>/config.json`` should not warn about them)."""
    config = s.to_dict()
    unused = {name for name in config.get("unlearn", {}) if isinstance(config["unlearn"][name], dict)} - used_sections
    config["unlearn"] = {key: value for key, value in config["unlearn"].items() if key not in unused}
    return config


def _output(s: Settings, kind: str, used_sections: set[str]) -> OutputPlan:
    folder = RunOptions(root=Path(s.logger_json.root), task=s.unlearn.task_name, kind=kind, name=s.logger.name,
                        overwrite=s.logger.overwrite, tensorboard=s.logger.tensorboard, wandb=s.logger.wandb,
                        resume=s.logger.resume)
    return OutputPlan(logger=s.overall.logger, folder=folder, config=_recorded_config(s, used_sections),
                      save_model=s.unlearn.save_model or s.lora.merge, save_best=s.unlearn.save_model,
                      merge=s.lora.merge)


def _description(s: Settings, evaluation: EvaluationPlan, title: str) -> RunDescription:
    return RunDescription(title=title, model_name=s.overall.model_name, finetuned=s.finetune.enabled,
                          seed=s.overall.seed, metrics=list(s.eval.metrics), splits=evaluation.splits)


def _evaluated_model(s: Settings, models: ModelPlan) -> FinetuneRecipe | ModelSource:
    """What evaluate.py evaluates (eval.model): the base model as named, or the fine-tuned target or retain."""
    return {"model_name": models.base, "target": models.target, "retain": models.retain}[s.eval.model]


