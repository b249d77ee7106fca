"""The Unlearner: runs one planned experiment (:func:`obliviate.plan.plan`) in stages, reading only the plan.

``run()``: setup (processes, run folder, evaluation session) → prepare the models (target and retain, fine-tuned
and cached when ``finetune.enabled``) → the mask and the method's :class:`~obliviate.models.assembly.Assembly` of
the model (sharded with FSDP) → evaluate before → unlearn (evaluation points, checkpoints, G-effect probe; the best
checkpoint) → evaluate after → attacks → finish (models saved, results written, the folder renamed).
``evaluate_model()``: setup → prepare → evaluate → finish (evaluate.py).

Several processes (``accelerate launch``/``torchrun``; DDP, or FSDP with ``overall.sharding fsdp``): every process
takes part in every training and evaluation, each on its share of the batches; the main process alone writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from transformers import PreTrainedTokenizerBase

from obliviate.attacks import AttackPoints, run_attacks
from obliviate.data.examples import Example
from obliviate.data.tokenize import encode_dataset, encode_splits
from obliviate.environment import Timings, environment_record, peak_memory_mb
from obliviate.evaluation.during_training import EvaluationPoints
from obliviate.evaluation.reference import EVALUATED
from obliviate.evaluation.session import EvaluationSession
from obliviate.loggers.json_logger import ATTACK_LOG
from obliviate.masks.mask import ParameterMask
from obliviate.methods.objective import Objective, PrepareContext
from obliviate.models import adapters
from obliviate.models.assembly import Assembly
from obliviate.models.loading import ModelSource, resolve_model, shapes_of
from obliviate.plan import ExperimentPlan
from obliviate.report import write_results
from obliviate.runtime import Runtime
from obliviate.sequence_plot import plot_sequence
from obliviate.training.checkpoint import Checkpointing
from obliviate.training.finetune import FinetuneRecipe
from obliviate.training.g_effect import G_EFFECT_LOG, GEffectProbe, plot_g_effect
from obliviate.training.loop import train

EVAL_LOG = "eval_log.jsonl"


class Unlearner:
    def __init__(self, plan: ExperimentPlan) -> None:
        self.plan, self.timings, self.results, self.warnings = plan, Timings(), {}, list(plan.warnings)
        self.trained_parameters, self.state_mb = 0, 0.0  # what the unlearning trained, and its memory here

    def run(self) -> Path | None:
        """Run the experiment; return the finished run folder (None on the other processes)."""
        p = self.plan
        self._setup()
        with self.runtime.stopping():
            model, tokenizer = self._prepare_models(p.models.target or p.models.base, "target")
            assembly = self._unlearn(model, tokenizer)
            if p.evaluate_after and not p.sequence:  # a sequence was evaluated after each stage
                with self.timings.stage("evaluate_after"):
                    self.results["after"] = self.session.evaluate(assembly.evaluated, tokenizer)
            if p.attacks.attacks:
                self._attack(assembly, tokenizer)
            if p.output.save_model:
                with self.timings.stage("save_model"):
                    assembly.save(self.runtime.writes, tokenizer)
            assembly.write_record(self.runtime.writes, saved=p.output.save_model)
            return self._finish()

    def evaluate_model(self) -> Path | None:
        """Evaluate ``eval.model`` without training; its results folder (``<root>/<task>/evaluations/<run>/``)."""
        p = self.plan
        self._setup()
        with self.runtime.stopping():
            model, tokenizer = self._prepare_models(p.evaluated_model, p.evaluated_role)
            with self.timings.stage("evaluate"):
                self.results[EVALUATED] = self.session.evaluate(p.models.ready(model), tokenizer, self.source)
            return self._finish()

    def _setup(self) -> None:
        """Start the processes and claim the run folder; open the evaluation session."""
        p = self.plan
        self.runtime = Runtime.start(p)
        self.main, self.folder, self.accelerator = self.runtime.main, self.runtime.folder, self.runtime.accelerator
        self.session = EvaluationSession(p.evaluation, p.fmt, p.models.cache_dir,
                                         p.models.retain_model(self.accelerator))

    def _prepare_models(self, which: FinetuneRecipe | ModelSource, role: str) -> tuple[torch.nn.Module, Any]:
        """Build (fine-tune when not cached) the model to work on and the retain model's reference evaluation."""
        p = self.plan
        with self.timings.stage("prepare_models"):
            self.source = p.models.build(which, role, self.accelerator)
            self.session.reference()  # evaluated (or read from the cache) before training
        with self.timings.stage("load_model"):
            return p.models.load(self.source)

    def _unlearn(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> Assembly:
        p = self.plan
        mask = self._mask(model, tokenizer)
        set_seed(p.training.seed)  # fresh adapters start alike whether or not an evaluation above was cached
        assembly = p.method.assemble(model, name=self.source.name, lora=p.lora,
                                     load=lambda name: p.models.load(resolve_model(name))[0])
        if p.models.sharded:
            assembly.shard()
        if p.evaluate_before:
            with self.timings.stage("evaluate_before"):
                self.results["before"] = self.session.evaluate(assembly.starting, tokenizer, self.source)
        if p.sequence:
            self._unlearn_in_stages(assembly, tokenizer, mask)
            points = None
        else:
            with self.timings.stage("unlearn"):
                points = self._train(assembly, tokenizer, mask, p.objective, p.training_data,
                                     self.runtime.checkpointing(p.training.save_every),
                                     self.folder.log_step if self.folder else lambda record: None)
        if points is not None and p.best is not None:
            with self.timings.stage("evaluate_best"):
                if self.main:
                    self.folder.write_json("best_checkpoint.json", points.best_record())
                if points.best is not None:
                    with points.best_weights():
                        self.results["best"] = self.session.evaluate(assembly.evaluated, tokenizer)
                        if p.output.save_best:
                            assembly.save_best(self.runtime.writes, tokenizer)
        assembly.finish_unlearning(self.runtime.writes, p.output.merge)
        return assembly

    def _mask(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> ParameterMask | None:
        """The plan's mask: loaded, or built by the main process (the others then read it)."""
        p = self.plan
        if p.mask is None:
            return None
        mask = p.mask.existing
        if mask is None:
            with self.timings.stage("build_mask"):
                if self.main:
                    data = encode_splits(tokenizer, p.data, {"forget", "retain"}, p.fmt, p.max_length)
                    mask = p.mask_recipe.make(model, data["forget"], data.get("retain"), p.mask.path)
                self.accelerator.wait_for_everyone()
                if mask is None:
                    mask = ParameterMask.load(p.mask.path)
        if self.main:
            self.folder.write_json("mask_stats.json", mask.record(p.mask.path, shapes_of(model)))
        return mask

    def _unlearn_in_stages(self, assembly: Assembly, tokenizer: PreTrainedTokenizerBase,
                           mask: ParameterMask | None) -> None:
        """``unlearn.sequence``: each stage trains from the weights the previous one left with a fresh objective (its
        reference, dual variable, ... from the stage's starting model; one mask, one LoRA adapter through every
        stage), then every split is evaluated (``stage_<k>``; the last is ``after``). Each stage's
        evaluation is written when it ends; a resumed run reads back the stages it finished, loads the last one's
        weights from its saved state and resumes the stage it was in from its own saved state."""
        stages = self.plan.sequence
        finished = self.runtime.finished_stages([stage.name for stage in stages])
        for index, stage in enumerate(stages):
            key = "after" if index == len(stages) - 1 else stage.name
            if index < finished - 1:
                self.results[key] = self.runtime.stage_evaluation(stage.name)
                continue
            checkpoint = self.runtime.stage_checkpointing(stage.name, self.plan.training.save_every)
            with self.timings.stage(f"unlearn_{stage.name}"):
                self._train(assembly, tokenizer, mask, self.plan.method.objective(), stage.training_data, checkpoint,
                            self.runtime.stage_log(index + 1, checkpoint))
            if index < finished:  # finished before: its weights are loaded, its evaluation read back
                self.results[key] = self.runtime.stage_evaluation(stage.name)
                continue
            with self.timings.stage(f"evaluate_{stage.name}"):
                self.results[key] = self.session.evaluate(assembly.evaluated, tokenizer)
            self.runtime.finish_stage(stage.name, self.results[key], stages[index - 1].name if index else None)
        if self.main:
            self.folder.write_json("sequence.json", {"stages": [stage.name for stage in stages],
                                                     "forget_sets": [stage.forget.name for stage in stages]})
            plot_sequence(self.results, self.plan.evaluation.splits, self.plan.evaluation.metrics,
                          self.folder.path("sequence.png"), f"{self.plan.method.name}: sequential unlearning")

    def _train(self, assembly: Assembly, tokenizer: PreTrainedTokenizerBase, mask: ParameterMask | None,
               objective: Objective, training_data: dict[str, list[Example]], checkpoint: Checkpointing | None,
               on_log: Callable[[dict], None]) -> EvaluationPoints | None:
        """Train the assembly with ``objective`` on ``training_data``; its evaluation points when evaluating along
        the way."""
        p, t, trained = self.plan, self.plan.training, assembly.trained
        set_seed(t.seed)
        splits = objective.splits | {"forget"} | ({"retain"} if t.g_effect_every else set())
        datasets = encode_splits(tokenizer, training_data, splits, p.fmt, p.max_length)
        objective.prepare(PrepareContext(
            trained, datasets, t.reference_batch_size, p.models.device, training_data,
            lambda examples: encode_dataset(tokenizer, examples, p.fmt, p.max_length),
            t.config.steps_per_epoch(len(datasets["forget"]), self.accelerator.num_processes)))
        probe = (GEffectProbe(t.g_effect_every, self.folder.path(G_EFFECT_LOG), assembly.evaluated,
                              definition=t.g_effect_definition, datasets=datasets, batch_size=t.config.batch_size,
                              seed=t.seed) if t.g_effect_every else None)  # one process only
        points = None
        if t.eval_every:  # every process evaluates (each its share), the main one records
            def evaluate() -> dict:
                assembly.evaluated.eval()
                return self.session.during_training(assembly.evaluated, tokenizer, t.eval_splits)

            record = (lambda point: self.folder.append_jsonl(EVAL_LOG, point)) if self.main else (lambda point: None)
            points = EvaluationPoints(evaluate, record, trained, t.eval_every,
                                      t.config.total_steps(len(datasets["forget"])), p.best)
            if checkpoint is None or not checkpoint.resume:
                points(0)  # a resumed state brings the points so far
        parts = {name: part for name, part in (("evaluation_points", points), ("g_effect", probe)) if part is not None}
        result = train(trained, objective, datasets, "forget", t.config, self.accelerator, t.seed,
                       on_log=on_log, mask=mask, inspect=probe,
                       after_step=points, checkpoint=checkpoint.with_parts(parts) if checkpoint else None,
                       description=f"unlearn ({p.method.name})")
        self.state_mb, self.warnings = result.state_mb, self.warnings + result.warnings
        self.trained_parameters = adapters.trainable_parameters(trained)
        if points is not None and self.main:
            points.plot(self.folder.path("eval_curves.png"), f"{p.method.name}: evaluation during unlearning")
        if probe is not None:
            plot_g_effect(self.folder.path(G_EFFECT_LOG), self.folder.path("g_effect.png"), p.method.name)
        if self.main and (artifacts := objective.artifacts()):
            self.folder.write_tensors("artifacts.safetensors", artifacts)
        return points

    def _attack(self, assembly: Assembly, tokenizer: PreTrainedTokenizerBase) -> None:
        """Every fine-tune (or quantization) attack from the unlearned weights, evaluated along the way."""
        model, points = assembly.attacked(), AttackPoints(self.session, tokenizer)
        with self.timings.stage("attacks"):
            curves = run_attacks(model, tokenizer, self.plan.attacks, self.accelerator,
                                 evaluate_point=lambda attack, step: points(model, attack, step),
                                 log_step=lambda record: self.folder.append_jsonl(ATTACK_LOG, record))
        if self.main:
            self.folder.write_json("attacks.json", curves)
            self.folder.track_curves("attacks", curves)

    def _finish(self) -> Path | None:
        """Every process reports its memory; the main one writes the results and finishes the folder."""
        models = self.plan.models
        processes = self.runtime.per_process(peak_memory_mb=round(peak_memory_mb(), 1), training_state_mb=self.state_mb)
        if not self.main:
            return None
        environment = {**environment_record(models.device, models.dtype, self.accelerator.num_processes),
                       "trainable_parameters": self.trained_parameters, "processes": processes}
        return write_results(self.folder, self.plan.description, self.results, self.timings.with_total(), environment,
                             self.warnings)
