"""The records of a plan: where the models come from, the mask, how unlearning trains, what the run writes, and
the :class:`ExperimentPlan` that holds them (the Unlearner's only input)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from obliviate.attacks import AttackPlan
from obliviate.config.sections import Lora
from obliviate.data.examples import Example, content_hash
from obliviate.data.tokenize import PromptFormat
from obliviate.errors import UserError
from obliviate.evaluation.during_training import BestRule
from obliviate.evaluation.session import EvaluationPlan, RetainModel
from obliviate.io import file_digest
from obliviate.loggers import RunOptions
from obliviate.masks.build import MaskRecipe
from obliviate.masks.mask import ParameterMask
from obliviate.methods.base import Method
from obliviate.methods.objective import Objective
from obliviate.models.loading import ModelSource, load_model
from obliviate.models.sharding import shard
from obliviate.plan.sequence import SequenceStage
from obliviate.report import RunDescription
from obliviate.training.finetune import FinetuneRecipe
from obliviate.training.schedule import TrainingConfig


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
    sharded: bool = False  # overall.sharding fsdp: every model evaluated or trained is sharded over the processes

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
        """The model and tokenizer of ``source`` on the plan's device and dtype (whole weights)."""
        return load_model(source, self.cache_dir, self.device, self.dtype)

    def ready(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` as the run uses it: sharded over the processes with ``overall.sharding fsdp``."""
        return shard(model) if self.sharded else model

    def retain_model(self, accelerator: Accelerator) -> RetainModel | None:
        """The retain model as the evaluation session reads it (fine-tuned and loaded only when needed)."""
        if self.retain is None:
            return None
        retain = self.retain

        def load() -> tuple[torch.nn.Module, Any]:
            model, tokenizer = self.load(self.build(retain, "retain", accelerator))
            return self.ready(model), tokenizer

        return RetainModel(source=self.retain_source, load=load)


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
    sequence: tuple[SequenceStage, ...]  # unlearn.sequence's stages (empty: one stage on training_data)
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
    nonfinite_advice: str  # what to change when a training step's loss or gradient is not finite
    warnings: list[str]  # what the user should know before the run (also written to summary.md and metrics.json)

    def inputs_digest(self) -> str:
        """A hash of the content of everything the run reads: its data (trained, evaluated, attacked), a mask
        file, and the models (an embedded name, a hub id, or a folder's files): a study cell whose inputs changed
        since it ran is run again (its config alone would not show it)."""
        parts = {"data": {name: content_hash(examples) for name, examples in self.data.items()},
                 "training_data": {name: content_hash(examples) for name, examples in self.training_data.items()},
                 "sequence": [content_hash(stage.training_data["forget"]) for stage in self.sequence],
                 "evaluated": {split.name: content_hash(list(split.examples)) for split in self.evaluation.splits},
                 "attacks": [[a.name, content_hash(a.train), content_hash(a.test)]
                             for a in (self.attacks.attacks if self.attacks else [])],
                 "mask": file_digest(self.mask.path) if self.mask is not None and self.mask.path.is_file() else None,
                 "models": [self.models.base.identity, self.models.target_source.identity,
                            self.models.retain_source.identity if self.models.retain_source else None]}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def check_processes(self, num_processes: int, sharded: bool) -> None:
        """Refuse what does not run on ``num_processes`` processes (or sharded weights), before any work."""
        if self.models.target is not None:
            self.models.target.check_buildable(num_processes, "target")
        if sharded:
            raise UserError("accelerate's FSDP/DeepSpeed plugins are not used here: launch with configs/accelerate/"
                            "ddp.yaml (or torchrun) and pass --overall.sharding fsdp for sharded weights (torch's "
                            "FSDP2); DeepSpeed is not supported")
        if num_processes > 1 and self.training is not None and self.training.g_effect_every:
            raise UserError("unlearn.g_effect_every needs one process (its probe gradients are not synchronised); "
                            "launch without --num_processes or set it to 0")
