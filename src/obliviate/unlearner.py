"""The Unlearner: one object that runs an experiment's lifecycle.

``Unlearner(settings).run()``: plan (every cheap check, :func:`obliviate.plan.plan`; a bad input fails
here, before any long work) → reserve the run folder (an existing one is an error) → prepare the target
and retain models (fine-tuned and cached when ``finetune.enabled``) → evaluate before → build the mask if
missing → unlearn with the registered method → evaluate after → fine-tune attacks → write results (and
the model, when asked) → rename the run folder to its final name. ``evaluate_model()`` is the same without
training, for evaluate.py.

Several processes (``accelerate launch`` or ``torchrun``; DDP through accelerate): every process loads the same
model, mask and cached reference quantities (computed from the same weights with the same seeds, so identical),
and takes part in every training (unlearning and attacks), each on its share of the batches. Everything else
runs on the main process only: it claims and writes the run folder, evaluates (before, during, after, at
attack points; the others wait at the next training step), builds a missing mask (the others then read it),
and saves models. Fine-tuning a target or retain model that is not cached yet needs one process (the cache
must not depend on the process count), as do the G-effect probe and FSDP/DeepSpeed (their sharded weights
would need gathering before the main process evaluates).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, broadcast_object_list, set_seed
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.attacks import run_attacks
from obliviate.config.settings import Settings
from obliviate.data.examples import Example
from obliviate.data.tokenize import EncodedDataset, PromptFormat, encode_dataset
from obliviate.environment import environment_record
from obliviate.errors import Interrupted, NonFiniteStep, RunFailed, UserError
from obliviate.evaluation.during_training import BestWeights, plot_eval_curves
from obliviate.evaluation.reference import EVALUATED
from obliviate.evaluation.results import Evaluation
from obliviate.evaluation.session import EvaluationSession
from obliviate.io import write_text_atomic
from obliviate.loggers import LOGGERS, RunFolder
from obliviate.loggers.json_logger import CHECKPOINT
from obliviate.masks.build import build_mask
from obliviate.masks.mask import ParameterMask
from obliviate.masks.plots import plot_mask_statistics
from obliviate.methods.base import PrepareContext
from obliviate.methods.logit_difference import LogitDifferenceMethod, logit_difference_method
from obliviate.models import adapters
from obliviate.models.finetune import FinetuneRecipe
from obliviate.models.loading import ModelSource, load_model, resolve_model, save_model, shapes_of
from obliviate.models.logit_difference import SPEC_FILE, LogitDifferenceModel
from obliviate.plan import ExperimentPlan, plan
from obliviate.report import metrics_table, run_summary
from obliviate.training.checkpoint import Checkpointing, MainProcessOnly, saved_step
from obliviate.training.g_effect import G_EFFECT_LOG, GEffectProbe, plot_g_effect
from obliviate.training.loop import train


def encoded(tokenizer: PreTrainedTokenizerBase, data: dict[str, list[Example]], splits: set[str],
            fmt: PromptFormat, max_length: int) -> dict[str, EncodedDataset]:
    """The training encoding of the named splits of ``data`` (those present)."""
    return {split: encode_dataset(tokenizer, data[split], fmt, max_length) for split in splits if split in data}


def make_mask(experiment: ExperimentPlan, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              path: Path) -> ParameterMask:
    """Build the mask section's mask for ``model``, save it at ``path`` with a statistics plot beside it."""
    s = experiment.settings
    data = encoded(tokenizer, experiment.data, {"forget", "retain"}, experiment.fmt, s.dataset.max_length)
    description = {"model": experiment.models.target_source.identity,
                   "forget": s.dataset.forget_dataset_name, "retain": s.dataset.retain_dataset_name}
    mask = build_mask(model, data["forget"], data.get("retain"), s.mask, s.dataset.batch_size, s.overall.seed,
                      description)
    mask.save(path)
    plot_mask_statistics(mask.statistics(shapes_of(model)), path.with_suffix(".png"),
                         f"{path.name}: {s.mask.score} ratio {s.mask.ratio} ({s.mask.granularity})")
    return mask


logger = logging.getLogger(__name__)
EVAL_LOG, ATTACK_LOG = "eval_log.jsonl", "attack_train_log.jsonl"
# How long processes wait for each other: the others wait while the main process evaluates (lm-eval on a 7B
# model can take hours); a process that fails makes the launcher stop the others at once.
PROCESS_GROUP_TIMEOUT = timedelta(hours=6)


def check_processes(accelerator: Accelerator, g_effect_every: int, target: FinetuneRecipe | None) -> None:
    """Refuse what does not run on several processes yet, before any work."""
    if target is not None:
        target.check_buildable(accelerator.num_processes, "target")
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise UserError(f"{accelerator.distributed_type.value} shards the weights, and evaluation runs on the main "
                        "process with the full model; launch with configs/accelerate/ddp.yaml (one model per GPU)")
    if accelerator.num_processes > 1 and g_effect_every:
        raise UserError("unlearn.g_effect_every needs one process (its probe gradients are not synchronised); "
                        "launch without --num_processes or set it to 0")


class EvaluationPoints:
    """The after-step callback of evaluation during unlearning: every ``every`` steps (and at the last), the
    splits of unlearn.eval_splits to eval_log.jsonl; the best point's weights kept on the Unlearner."""

    def __init__(self, unlearner: "Unlearner", evaluated: torch.nn.Module, model: torch.nn.Module,
                 tokenizer: PreTrainedTokenizerBase, every: int, total: int) -> None:
        self.unlearner, self.evaluated, self.model, self.tokenizer = unlearner, evaluated, model, tokenizer
        self.every, self.total = every, total
        self.points: list[dict] = []

    def __call__(self, step: int) -> None:
        if step % self.every and step != self.total:
            return
        u = self.unlearner
        self.evaluated.eval()
        point = {"step": step, **u.session.during_training(self.evaluated, self.tokenizer,
                                                            list(u.settings.unlearn.eval_splits))}
        self.points.append(point)
        u.run_folder.append_jsonl(EVAL_LOG, point)
        rule = u.plan.best
        if rule is not None and step > 0 and rule.choose(self.points) is point:
            u.best = (point, BestWeights.of(self.model))

    def state_dict(self) -> dict:
        """The points so far and the best one's weights: saved with a resumable checkpoint."""
        best = self.unlearner.best
        return {"points": self.points, "best_step": best[0]["step"] if best else None,
                "best_tensors": best[1].tensors if best else {}}

    def load_state_dict(self, state: dict) -> None:
        self.points = list(state["points"])
        if state["best_step"] is not None:
            point = next(p for p in self.points if p["step"] == state["best_step"])
            self.unlearner.best = (point, BestWeights(state["best_tensors"]))


class Unlearner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timings: dict[str, float] = {}
        self.trained_parameters = 0  # parameters the unlearning updated (adapters only, with LoRA)
        self.best: tuple[dict, BestWeights] | None = None  # the best evaluated point and its trainable weights

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - start, 2)

    def _start(self, folder_kind: str | None = None) -> None:
        """Plan (all checks), then claim the run folder and set up the machine; ``folder_kind`` names the
        results folder of an evaluation-only run (no method, mask or attacks)."""
        self.plan = plan(self.settings, unlearning=folder_kind is None)
        s = self.settings
        self.accelerator = Accelerator(cpu=self.plan.models.device.type == "cpu",
                                       kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)])
        check_processes(self.accelerator, s.unlearn.g_effect_every if folder_kind is None else 0,
                        self.plan.models.target)
        self.main = self.accelerator.is_main_process
        self.run_folder: RunFolder | None = None  # only the main process writes
        if self.main:
            self.run_folder = LOGGERS.get(s.overall.logger)(
                Path(s.logger_json.root), s.unlearn.task_name, folder_kind or self.plan.method, s.logger.name,
                s.logger.overwrite, s.logger.tensorboard, s.logger.wandb, s.logger.resume)
            self.run_folder.start(s.to_dict())
        shared = [(self.run_folder.work, self.run_folder.resumed) if self.run_folder else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(shared)  # the other processes read checkpoints from the main one's folder
        self.work, self.resumed = shared[0]
        models = self.plan.models
        self.session = EvaluationSession(self.plan.evaluation, self.plan.fmt, models,
                                         lambda which, role: models.build(which, role, self.accelerator))

    @contextlib.contextmanager
    def _marked_failed_on_stop(self) -> Iterator[None]:
        """A run that stops (non-finite step, Ctrl-C/SIGTERM, any error) leaves ``<name>.failed/`` with
        ``failure.json``, never a folder that looks finished; the error is re-raised as one line. The other
        processes of a multi-process run leave that to the main one."""
        if not self.main:
            try:
                yield
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted (process {self.accelerator.process_index}; the main process says "
                                  "what is left on disk)") from None
            return
        try:
            yield
        except NonFiniteStep as failure:
            folder = self.run_folder.fail(str(failure), {"step": failure.step, "logs": failure.logs})
            raise RunFailed(f"{failure}; the run stopped and its logs are in '{folder}' (no metrics.json); "
                            "lower that stage's learning rate (unlearn.lr, finetune.lr or attack.lr) or check the "
                            "data, then rerun") from None
        except KeyboardInterrupt:
            saved = saved_step(self.run_folder.path(CHECKPOINT))
            folder = self.run_folder.fail("interrupted", {"saved_step": saved})
            name = self.run_folder.final.name
            again = (f"rerun the same command with --logger.name {name} --logger.resume true to continue after "
                     f"step {saved}" if saved is not None else "rerun the same command to start again")
            raise Interrupted(f"interrupted; the partial run (logs, no metrics.json) is in '{folder}'; {again}"
                              ) from None
        except BaseException as error:
            self.run_folder.fail(type(error).__name__, {"message": str(error)})
            raise

    # ---------------------------------------------------------------- the whole run
    def run(self) -> Path | None:
        """Run the experiment; return the finished run folder (None on the other processes of a multi-process
        run)."""
        start = time.perf_counter()
        self._start()
        with self._marked_failed_on_stop():
            p, s = self.plan, self.settings
            with self._timed("prepare_models"):
                target = p.models.build(p.models.target or p.models.base, "target", self.accelerator)
                if self.main:
                    self.session.reference()  # evaluated (or read from the cache) before training
            with self._timed("load_model"):
                model, tokenizer = load_model(target, p.models.cache_dir, p.models.device, p.models.dtype)
            results: dict[str, Evaluation] = {}
            if s.eval.before and self.main:
                with self._timed("evaluate_before"):
                    results["before"] = self.session.evaluate(model, tokenizer, target)
            mask = self._mask(model, tokenizer)
            combination = logit_difference_method(p.method)
            set_seed(s.overall.seed)  # fresh adapters start alike whether or not an evaluation above was cached
            if combination is not None:
                model = self._assemble(combination, model, target)
                trained = combination.trained(model)
            else:
                model = trained = adapters.attach(model, s.lora) if s.lora.enabled else model
            with self._timed("unlearn"):
                self._unlearn(model, trained, tokenizer, mask)
            if self.plan.best is not None and self.main:
                with self._timed("evaluate_best"):
                    if (best := self._best_checkpoint(model, trained, tokenizer)) is not None:
                        results["best"] = best
            if isinstance(model, LogitDifferenceModel):
                if self.main:
                    model.assistant.save_pretrained(self.run_folder.path("adapter"))
            elif s.lora.enabled:
                if self.main:
                    model.save_pretrained(self.run_folder.path("adapter"))  # safetensors + peft's adapter config
                if s.lora.merge:
                    model = adapters.merged(model)
            if s.eval.after and self.main:
                with self._timed("evaluate_after"):
                    results["after"] = self.session.evaluate(model, tokenizer)
            if p.attacks:
                model = adapters.merged(model)  # attacks fine-tune full weights
                with self._timed("attacks"):
                    curves = run_attacks(model, tokenizer, p.attacks, p.fmt, s.dataset.max_length, s.attack.eval_every,
                                         self.accelerator, s.overall.seed,
                                         lambda attack, step: self.session.attack_point(
                                             model, tokenizer, attack, unlearned=step == 0) if self.main else {},
                                         lambda record: self.run_folder.append_jsonl(ATTACK_LOG, record))
                if self.main:
                    self.run_folder.write_json("attacks.json", curves)
                    self.run_folder.track_curves("attacks", curves)
            if not self.main:
                return None
            if s.unlearn.save_model or s.lora.merge:
                with self._timed("save_model"):
                    saved = model.target if isinstance(model, LogitDifferenceModel) else adapters.merged(model)
                    save_model(self.accelerator.unwrap_model(saved), tokenizer, self.run_folder.path("model"))
            if isinstance(model, LogitDifferenceModel):  # the saved target when there is one, else where it came from
                spec = replace(model.spec, target="model" if s.unlearn.save_model else model.spec.target)
                self.run_folder.write_json(SPEC_FILE, spec.record())
            return self._write_results(results, start, f"{p.method} unlearning of {target.name}")

    def _assemble(self, combination: type[LogitDifferenceMethod], target: PreTrainedModel,
                  source: ModelSource) -> LogitDifferenceModel:
        """ULD/Offset: the target combined with a fresh adapter on the assistant."""
        s, models = self.settings, self.plan.models
        spec = combination.spec(s, self.plan.method, source.name)
        assistant = (load_model(resolve_model(spec.assistant), models.cache_dir, models.device, models.dtype)[0]
                     if spec.assistant else None)
        return combination.assemble(target, assistant, spec, s)

    def _mask(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> ParameterMask | None:
        planned = self.plan.mask
        if planned is None:
            return None
        mask = planned.existing
        if mask is None:
            with self._timed("build_mask"):
                if self.main:
                    mask = make_mask(self.plan, model, tokenizer, planned.path)
                self.accelerator.wait_for_everyone()
                if not self.main:
                    mask = ParameterMask.load(planned.path)
        if not self.main:
            return mask
        self.run_folder.write_json("mask_stats.json", {"path": str(planned.path), "metadata": mask.metadata,
                                                       **mask.statistics(shapes_of(model))})
        return mask

    def _unlearn(self, evaluated: torch.nn.Module, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                 mask: ParameterMask | None) -> None:
        """Train ``model`` (the whole model, its adapter, or ULD's assistant) with the method's objective;
        ``evaluated`` is what the metrics see during unlearning (the model, or the combined ULD/Offset model)."""
        p, s = self.plan, self.settings
        set_seed(s.overall.seed)
        probing = s.unlearn.g_effect_every > 0
        splits = p.objective.splits | {"forget"} | ({"retain"} if probing else set())
        datasets = encoded(tokenizer, p.training_data, splits, p.fmt, s.dataset.max_length)

        def encode(examples: list[Example]) -> EncodedDataset:
            return encode_dataset(tokenizer, examples, p.fmt, s.dataset.max_length)

        p.objective.prepare(PrepareContext(model, datasets, s.eval.batch_size, p.models.device, p.training_data,
                                           encode))
        probe = (GEffectProbe(s.unlearn.g_effect_every, datasets, s.dataset.batch_size, s.overall.seed,
                              self.run_folder.path(G_EFFECT_LOG)) if probing else None)  # one process only
        config = s.unlearn.training(s.dataset.batch_size)
        checkpoint = self._checkpointing()
        continuing = checkpoint is not None and checkpoint.resume
        tracker = (self._evaluation_points(evaluated, model, tokenizer, config.total_steps(len(datasets["forget"])),
                                           evaluate_start=not continuing) if self.main else None)
        if checkpoint is not None:
            kept = tracker if self.main or not s.unlearn.eval_every else MainProcessOnly()
            checkpoint = replace(checkpoint, extra=tuple(part for part in (kept, probe) if part is not None))
        train(model, p.objective, datasets, "forget", config, self.accelerator, s.overall.seed,
              on_log=self.run_folder.log_step if self.run_folder else lambda record: None, mask=mask, inspect=probe,
              after_step=tracker, checkpoint=checkpoint, description=f"unlearn ({p.method})")
        self.trained_parameters = adapters.trainable_parameters(model)
        if not self.main:
            return
        if tracker is not None:
            best = self.best[0]["step"] if self.best else None
            plot_eval_curves(tracker.points, self.run_folder.path("eval_curves.png"), best,
                             f"{p.method}: evaluation during unlearning")
        if probing:
            plot_g_effect(self.run_folder.path(G_EFFECT_LOG), self.run_folder.path("g_effect.png"), p.method)
        if artifacts := p.objective.artifacts():
            save_file({k: v.contiguous().cpu() for k, v in artifacts.items()},
                      str(self.run_folder.path("artifacts.safetensors")))

    def _evaluation_points(self, evaluated: torch.nn.Module, model: torch.nn.Module,
                           tokenizer: PreTrainedTokenizerBase, total: int, evaluate_start: bool
                           ) -> "EvaluationPoints | None":
        """With unlearn.eval_every: the callback that evaluates every k steps and keeps the best point's weights
        (``self.best``), after evaluating step 0 now (unless a resumed state brings the points so far)."""
        every = self.settings.unlearn.eval_every
        if not every:
            return None
        tracker = EvaluationPoints(self, evaluated, model, tokenizer, every, total)
        if evaluate_start:
            tracker(0)
        return tracker

    def _checkpointing(self) -> Checkpointing | None:
        """unlearn.save_every's checkpoints; when resuming, the logs are cut back to the saved step (records
        written after it are written again), or emptied when no state was saved."""
        every = self.settings.unlearn.save_every
        checkpoint = Checkpointing(self.work / CHECKPOINT, every, False) if every else None
        if not self.resumed:
            return checkpoint
        saved = checkpoint.saved_step() if checkpoint is not None else None
        if not self.main:
            return replace(checkpoint, resume=True) if saved is not None else checkpoint
        for name in ("train_log.jsonl", EVAL_LOG, G_EFFECT_LOG, ATTACK_LOG):
            self.run_folder.truncate_jsonl(name, -1 if saved is None or name == ATTACK_LOG else saved)
        logger.info("resuming %s after step %s", self.run_folder.work, saved if saved is not None else "0 (no "
                    "saved state: from the start)")
        return replace(checkpoint, resume=True) if saved is not None else checkpoint

    def _best_checkpoint(self, evaluated: torch.nn.Module, model: torch.nn.Module,
                         tokenizer: PreTrainedTokenizerBase) -> Evaluation | None:
        """best_checkpoint.json; with a chosen point, its full evaluation (and model_best/ when saving)."""
        rule = self.plan.best
        record = {"rule": rule.describe(), "step": self.best[0]["step"] if self.best else None,
                  "point": self.best[0] if self.best else None}
        self.run_folder.write_json("best_checkpoint.json", record)
        if not self.best:
            logger.warning("no evaluated point satisfies the best-checkpoint rule (%s)", rule.describe())
            return None
        last = BestWeights.of(model)
        self.best[1].load_into(model)
        try:
            evaluation = self.session.evaluate(evaluated, tokenizer)
            if self.settings.unlearn.save_model and not isinstance(evaluated, LogitDifferenceModel):
                if self.settings.lora.enabled:
                    model.save_pretrained(self.run_folder.path("adapter_best"))
                else:
                    save_model(self.accelerator.unwrap_model(model), tokenizer, self.run_folder.path("model_best"))
        finally:
            last.load_into(model)
        return evaluation

    # ---------------------------------------------------------------- evaluation only
    def evaluate_model(self) -> Path | None:
        """Evaluate one model (``eval.model``) on every split without training; return its results folder
        (``<root>/<task>/evaluations/<run>/``). Only the main process evaluates."""
        start = time.perf_counter()
        which = self.settings.eval.model
        self._start("evaluations")
        if not self.main:
            return None
        models = self.plan.models
        with self._marked_failed_on_stop():
            with self._timed("prepare_models"):
                source = models.build({"model_name": models.base, "target": models.target,
                                       "retain": models.retain}[which], which, self.accelerator)
                self.session.reference()
            with self._timed("evaluate"):
                model, tokenizer = load_model(source, models.cache_dir, models.device, models.dtype)
                evaluation = self.session.evaluate(model, tokenizer, source)
            return self._write_results({EVALUATED: evaluation}, start, f"{which}: {source.name}")

    def _write_results(self, results: dict[str, Evaluation], start: float, title: str) -> Path:
        """metrics.json, per_example.json, env.json and summary.md; then the run folder is finished."""
        self.run_folder.write_json("metrics.json", {stage: e.metrics_record() for stage, e in results.items()})
        self.run_folder.write_json("per_example.json", {stage: e.per_example_record() for stage, e in results.items()})
        self.timings["total"] = round(time.perf_counter() - start, 2)
        models = self.plan.models
        self.run_folder.write_json("env.json", {**environment_record(models.device, models.dtype,
                                                                     self.accelerator.num_processes),
                                                "trainable_parameters": self.trained_parameters,
                                                "wall_time_seconds": self.timings})
        write_text_atomic(self.run_folder.path("summary.md"),
                          run_summary(title, self.settings, self.plan.evaluation.splits, results, self.timings))
        folder = self.run_folder.finish()
        if results:
            print(metrics_table({stage: e.metrics_record() for stage, e in results.items()}))
        print(f"results: {folder}")
        return folder
