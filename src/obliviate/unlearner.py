"""The Unlearner: one object with an explicit lifecycle.

``Unlearner(settings).run()`` = setup (every cheap check: config semantics, data, model name, mask fit,
attack data; raises :class:`UserError` before any long work) → reserve the run folder (an existing one is
an error) → prepare the target and retain models (fine-tuned and cached when ``finetune.enabled``) →
evaluate before → build the mask if missing → unlearn with the registered method → evaluate after →
fine-tune attacks → write results (and the model, when asked) → rename the run folder to its final name.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Iterator

from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.attacks import RELEARN, Attack, plan_attacks, run_attacks
from obliviate.config.settings import Settings
from obliviate.data.examples import Example, content_hash
from obliviate.data.sources import load_examples
from obliviate.data.tokenize import EncodedDataset, PromptFormat, encode_example
from obliviate.environment import environment_record
from obliviate.errors import UserError
from obliviate.evaluation.evaluator import LM_EVAL, Evaluation, cached_evaluation, evaluate
from obliviate.evaluation.lm_eval_tasks import check_tasks
from obliviate.evaluation.metrics import EvalOptions
from obliviate.evaluation.reference import PRIVLEAK_SCORE, REFERENCE_ATTACK, RetainReference
from obliviate.evaluation.semantic import checked_model_folder
from obliviate.io import write_text_atomic
from obliviate.loggers import LOGGERS
from obliviate.masks.build import build_mask, select_names
from obliviate.masks.mask import ParameterMask
from obliviate.masks.plots import plot_mask_statistics
from obliviate.methods import METHODS
from obliviate.methods.base import PrepareContext
from obliviate.models.finetune import FinetuneRecipe
from obliviate.models.loading import (ModelSource, load_model, parameter_shapes, resolve_device, resolve_dtype,
                                      resolve_model, save_model, shapes_of)
from obliviate.report import metrics_table, run_summary
from obliviate.training.loop import train
from obliviate.training.schedule import TrainingConfig

EVAL_VERSION = 1
EVAL_SPLITS = ("forget", "retain", "holdout", "real_authors", "world_facts")


def prompt_format(template: str, chat: bool) -> PromptFormat:
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError):
        raise UserError(f"dataset.question_template {template!r} may only use the field {{question}}; "
                        "escape other braces as {{ }}") from None
    if "{question}" not in template:
        raise UserError(f"dataset.question_template {template!r} must contain {{question}}")
    return PromptFormat(template, chat)


def extra_split_names(entries: list[str], taken: set[str]) -> dict[str, str]:
    """``eval.extra_splits`` entries 'name=dataset' as {name: dataset}."""
    splits = {}
    for entry in entries:
        name, _, dataset = (part.strip() for part in entry.partition("="))
        if not name.isidentifier() or not dataset:
            raise UserError(f"eval.extra_splits entry {entry!r} must read 'name=dataset', e.g. "
                            "'forget_qa=synthetic:forget10'")
        if name in taken or name in splits or name in EVAL_SPLITS:
            raise UserError(f"eval.extra_splits: split name '{name}' is already used; choose another name")
        splits[name] = dataset
    return splits


class Unlearner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - start, 2)

    # ---------------------------------------------------------------- setup (cheap checks only)
    def setup(self) -> None:
        s = self.settings
        self.cache_dir = Path(s.overall.cache_dir)
        self.method = METHODS.canonical(s.unlearn.unlearn_method)
        self.objective = METHODS.get(self.method).objective(s, self.method)
        self.fmt = prompt_format(s.dataset.question_template, s.dataset.chat_template)
        self.data = self._load_data()
        needed = self.objective.splits | ({"retain"} if s.finetune.enabled else set())
        if missing := needed - set(self.data):
            raise UserError(f"{self.method} (or finetune.enabled) needs {', '.join(sorted(missing))} data; "
                            f"set dataset.{sorted(missing)[0]}_dataset_name")
        self.base = resolve_model(s.overall.model_name)
        self.device = resolve_device(s.overall.device)
        self.dtype = resolve_dtype(s.overall.dtype, self.device)
        self.target = self._recipe(self.data["forget"] + self.data.get("retain", [])) if s.finetune.enabled else None
        self.oracle = self._oracle()
        self.retain_logs = (RetainReference.from_run_folder(Path(s.eval.retain_logs_path))
                            if s.eval.retain_logs_path else None)
        if "forget_quality" in s.eval.metrics and self.oracle is None and self.retain_logs is None:
            raise UserError("eval.metrics has forget_quality but there is no retain model: set "
                            "--finetune.enabled true, --eval.retain_model_name or --eval.retain_logs_path, "
                            "or drop forget_quality")
        self.mask = self._check_mask()
        if s.eval.lm_eval_tasks:
            check_tasks(s.eval.lm_eval_tasks)
        if "semantic_match" in s.eval.metrics:
            checked_model_folder()
        self.attacks = plan_attacks(s.section("attack"), self.data["forget"],
                                    lambda name: load_examples(name, Path(s.dataset.data_dir)))
        self.accelerator = Accelerator(cpu=self.device.type == "cpu")

    def _check_mask(self) -> ParameterMask | None:
        """Load an existing mask and check it against the model's parameters (no weights loaded), or check
        that the mask section can build one; both before any long work."""
        if not self.mask_path:
            return None
        shapes = parameter_shapes(self.base, self.cache_dir)
        if self.mask_path.exists():
            mask = ParameterMask.load(self.mask_path)
            mask.check(shapes, f"'{self.mask_path}'")
            return mask
        select_names(list(shapes), self.settings.mask.include, self.settings.mask.exclude)
        if self.settings.mask.score == "wagle" and "retain" not in self.data:
            raise UserError("mask.score wagle needs retain data; set dataset.retain_dataset_name")
        return None

    @property
    def mask_path(self) -> Path | None:
        return Path(self.settings.unlearn.mask_path) if self.settings.unlearn.mask_path else None

    def _load_data(self) -> dict[str, list[Example]]:
        d = self.settings.dataset
        names = {"forget": d.forget_dataset_name, "retain": d.retain_dataset_name, "holdout": d.holdout_dataset_name,
                 "real_authors": d.real_authors_dataset_name, "world_facts": d.world_facts_dataset_name,
                 **METHODS.get(self.method).datasets(self.settings, self.method)}
        if not names["forget"]:
            raise UserError("dataset.forget_dataset_name is empty; name the data to forget")
        self.extra_splits = extra_split_names(self.settings.eval.extra_splits, set(names))
        names.update(self.extra_splits)
        return {split: load_examples(name, Path(d.data_dir)) for split, name in names.items() if name}

    def _recipe(self, examples: list[Example]) -> FinetuneRecipe:
        s = self.settings
        training = {k: v for k, v in s.section("finetune").items() if k != "enabled"}
        return FinetuneRecipe(self.base, examples, training, s.overall.seed, self.fmt, s.dataset.max_length,
                              self.cache_dir)

    def _oracle(self) -> FinetuneRecipe | ModelSource | None:
        if self.settings.finetune.enabled:
            return self._recipe(self.data["retain"])
        if self.settings.eval.retain_model_name:
            return resolve_model(self.settings.eval.retain_model_name)
        return None

    # ---------------------------------------------------------------- stages
    def _build(self, model: FinetuneRecipe | ModelSource, role: str) -> ModelSource:
        if isinstance(model, FinetuneRecipe):
            return model.build(self.cache_dir, self.device, self.dtype, self.accelerator, role)
        return model

    def finetune_models(self) -> dict[str, ModelSource]:
        """Build (or find cached) the fine-tuned target and retain models; call after :meth:`setup`."""
        if self.target is None:
            raise UserError("finetune.enabled is false in this experiment, so there is nothing to fine-tune; "
                            "pass --finetune.enabled true")
        return {role: self._build(recipe, role) for role, recipe in (("target", self.target), ("retain", self.oracle))}

    def _eval_splits(self) -> dict[str, list[Example]]:
        limit = self.settings.eval.max_examples or None
        names = [*EVAL_SPLITS, *self.extra_splits]
        return {split: self.data[split][:limit] for split in names if split in self.data}

    def _evaluate(self, source: ModelSource | None, load: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]],
                  splits: dict[str, list[Example]], metrics: list[str], reference: RetainReference | None) -> Evaluation:
        """Evaluate the model ``load()`` returns; with a ``source`` the result is cached under its identity
        (and ``load`` is called only on a cache miss)."""
        options = self._eval_options()

        def compute() -> Evaluation:
            return evaluate(*load(), splits, self.fmt, options, metrics, reference)

        if source is None:
            return compute()
        key = {"version": EVAL_VERSION, "model": source.identity, "metrics": sorted(metrics),
               "splits": {name: content_hash(examples) for name, examples in splits.items()},
               "options": {k: v for k, v in asdict(options).items() if k != "work_dir"},
               "format": asdict(self.fmt),
               "reference": hashlib.sha256(json.dumps(reference and asdict(reference)).encode()).hexdigest()[:16]}
        return cached_evaluation(self.cache_dir, key, compute)

    def _eval_options(self) -> EvalOptions:
        e = self.settings.eval
        return EvalOptions(e.batch_size, self.settings.dataset.max_length, e.max_new_tokens, self.cache_dir,
                           tuple(e.lm_eval_tasks), e.max_examples)

    def _attack(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, reference: RetainReference | None) -> dict:
        """Run the fine-tune attacks; forget metrics (and the task's accuracy) at each evaluation point.

        A relearning attack on a slice of the forget set is also evaluated on the forget examples outside
        the slice (``forget_unseen``): knowledge that comes back there was not simply trained in again.
        """
        s = self.settings
        forget = self._eval_splits()["forget"]
        limit = s.eval.max_examples or None
        options = self._eval_options()

        def forget_metrics(examples: list[Example], with_tasks: bool = False) -> dict:
            evaluation = evaluate(model, tokenizer, {"forget": examples}, self.fmt,
                                  options if with_tasks else replace(options, lm_eval_tasks=()), s.eval.metrics,
                                  reference)
            return {**evaluation.metrics["forget"], **evaluation.metrics.get(LM_EVAL, {})}

        def evaluate_point(attack: Attack) -> dict:
            point = {"forget": forget_metrics(forget, with_tasks=True)}  # e.g. WMDP accuracy along the attack
            trained = set(attack.train)
            if attack.name == RELEARN and 0 < len(unseen := [e for e in forget if e not in trained]) < len(forget):
                point["forget_unseen"] = forget_metrics(unseen)
            if attack.test:
                point["task"] = evaluate(model, tokenizer, {"task": attack.test[:limit]}, self.fmt, options,
                                         ["exact_match"]).metrics["task"]
            return point

        with self._timed("attacks"):
            return run_attacks(model, tokenizer, self.attacks, self.fmt, s.dataset.max_length, s.attack.eval_every,
                               self.accelerator, s.overall.seed, evaluate_point,
                               lambda record: self.run_folder.append_jsonl("attack_train_log.jsonl", record))

    def _retain_reference(self) -> RetainReference | None:
        """What forget_quality and privleak need from the retain model: read from eval.retain_logs_path, or
        evaluated on the retain model (cached; the model is fine-tuned only on a cache miss)."""
        s = self.settings
        if self.retain_logs is not None:
            return self.retain_logs
        splits = self._eval_splits()
        quality = "forget_quality" in s.eval.metrics
        leak, attack = (name in s.eval.metrics and "holdout" in splits for name in (PRIVLEAK_SCORE, REFERENCE_ATTACK))
        if self.oracle is None or not (quality or leak or attack):
            return None
        source = self.oracle.source if isinstance(self.oracle, FinetuneRecipe) else self.oracle

        def load() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:  # build (fine-tune) only on a miss
            return load_model(self._build(self.oracle, "retain"), self.cache_dir, self.device, self.dtype)

        needed = {"forget": splits["forget"], **({"holdout": splits["holdout"]} if leak or attack else {})}
        metrics = ["truth_ratio"] * quality + [PRIVLEAK_SCORE] * leak + ["prob"] * attack
        evaluation = self._evaluate(source, load, needed, metrics, None)
        gc.collect()
        return RetainReference.from_evaluation(evaluation.metrics, evaluation.per_example)

    def _encoded(self, tokenizer: PreTrainedTokenizerBase, splits: set[str]) -> dict[str, EncodedDataset]:
        length = self.settings.dataset.max_length
        return {split: EncodedDataset([encode_example(tokenizer, e, self.fmt, length) for e in self.data[split]],
                                      tokenizer.pad_token_id)
                for split in splits if split in self.data}

    def build_mask(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> ParameterMask:
        """Build the mask section's mask for ``model``, save it at ``path`` with a statistics plot beside it."""
        s = self.settings
        data = self._encoded(tokenizer, {"forget", "retain"})
        description = {"model": self.base.identity if self.target is None else self.target.source.identity,
                       "forget": s.dataset.forget_dataset_name, "retain": s.dataset.retain_dataset_name}
        mask = build_mask(model, data["forget"], data.get("retain"), s.section("mask"), s.dataset.batch_size,
                          s.overall.seed, description)
        mask.save(path)
        plot_mask_statistics(mask.statistics(shapes_of(model)), path.with_suffix(".png"),
                             f"{path.name}: {s.mask.score} ratio {s.mask.ratio} ({s.mask.granularity})")
        return mask

    def _unlearn(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        s = self.settings
        set_seed(s.overall.seed)
        datasets = self._encoded(tokenizer, self.objective.splits | {"forget"})
        self.objective.prepare(PrepareContext(model, datasets, s.eval.batch_size, self.device))
        config = TrainingConfig.from_section(s.section("unlearn"), s.dataset.batch_size)
        train(model, self.objective, datasets, "forget", config, self.accelerator, s.overall.seed,
              on_log=self.run_folder.log_step, mask=self.mask, description=f"unlearn ({self.method})")
        if artifacts := self.objective.artifacts():
            save_file({k: v.contiguous().cpu() for k, v in artifacts.items()}, str(self.run_folder.path("artifacts.safetensors")))

    # ---------------------------------------------------------------- evaluation only
    def evaluate_model(self) -> Path:
        """Evaluate one model (``eval.model``) on every split without training; return its results folder
        (``<root>/<task>/evaluations/<run>/``)."""
        start = time.perf_counter()
        self.setup()
        s = self.settings
        which = s.eval.model
        if which != "model_name" and self.target is None:
            raise UserError(f"eval.model {which} needs the fine-tuned models: pass --finetune.enabled true, or "
                            "evaluate a model by name with --eval.model model_name")
        self.run_folder = LOGGERS.get(s.logger.name)(Path(s.logger.json.root), s.unlearn.task_name, "evaluations",
                                                     s.logger.run_name, s.logger.overwrite)
        self.run_folder.start(s.to_dict())
        with self._timed("prepare_models"):
            source = {"model_name": self.base, "target": self.target, "retain": self.oracle}[which]
            source = self._build(source, which)
            reference = self._retain_reference()
        with self._timed("evaluate"):
            evaluation = self._evaluate(source, lambda: load_model(source, self.cache_dir, self.device, self.dtype),
                                        self._eval_splits(), s.eval.metrics, reference)
        return self._write_results({"evaluated": evaluation}, start, f"{which}: {source.name}")

    # ---------------------------------------------------------------- the whole run
    def run(self) -> Path:
        """Run the experiment; return the finished run folder."""
        start = time.perf_counter()
        self.setup()
        s = self.settings
        self.run_folder = LOGGERS.get(s.logger.name)(Path(s.logger.json.root), s.unlearn.task_name, self.method,
                                                     s.logger.run_name, s.logger.overwrite)
        self.run_folder.start(s.to_dict())
        with self._timed("prepare_models"):
            target = self._build(self.target, "target") if self.target else self.base
            reference = self._retain_reference()
        with self._timed("load_model"):
            model, tokenizer = load_model(target, self.cache_dir, self.device, self.dtype)
        splits = self._eval_splits()
        results: dict[str, Evaluation] = {}
        if s.eval.before:
            with self._timed("evaluate_before"):
                results["before"] = self._evaluate(target, lambda: (model, tokenizer), splits, s.eval.metrics,
                                                    reference)
        if self.mask_path:
            if self.mask is None:
                with self._timed("build_mask"):
                    self.mask = self.build_mask(model, tokenizer, self.mask_path)
            self.run_folder.write_json("mask_stats.json", {
                "path": str(self.mask_path), "metadata": self.mask.metadata,
                **self.mask.statistics(shapes_of(model))})
        with self._timed("unlearn"):
            self._unlearn(model, tokenizer)
        if s.eval.after:
            with self._timed("evaluate_after"):
                results["after"] = self._evaluate(None, lambda: (model, tokenizer), splits, s.eval.metrics,
                                                   reference)
        if self.attacks:
            self.run_folder.write_json("attacks.json", self._attack(model, tokenizer, reference))
        if s.unlearn.save_model:
            with self._timed("save_model"):
                save_model(self.accelerator.unwrap_model(model), tokenizer, self.run_folder.path("model"))
        return self._write_results(results, start, f"{self.method} unlearning of {target.name}")

    def _write_results(self, results: dict[str, Evaluation], start: float, title: str) -> Path:
        """metrics.json, per_example.json, env.json and summary.md; then the run folder is finished."""
        metrics = {stage: evaluation.metrics for stage, evaluation in results.items()}
        self.run_folder.write_json("metrics.json", metrics)
        self.run_folder.write_json("per_example.json", {k: v.per_example for k, v in results.items()})
        self.timings["total"] = round(time.perf_counter() - start, 2)
        self.run_folder.write_json("env.json", {**environment_record(self.device, self.dtype,
                                                                     self.accelerator.num_processes),
                                                "wall_time_seconds": self.timings})
        write_text_atomic(self.run_folder.path("summary.md"), run_summary(title, self.settings, metrics, self.timings))
        folder = self.run_folder.finish()
        if metrics:
            print(metrics_table(metrics))
        print(f"results: {folder}")
        return folder
