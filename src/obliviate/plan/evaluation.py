"""The evaluation an experiment runs: its prompt format, its splits (primary, extra and probes) with their roles,
metrics and options, what the metrics need from the retain model, and the best-checkpoint rule."""

from __future__ import annotations

from pathlib import Path

from obliviate.config.settings import Settings
from obliviate.data.examples import Example
from obliviate.data.sources import SYNTHETIC_PREFIX, load_examples
from obliviate.data.tokenize import PromptFormat
from obliviate.errors import UserError
from obliviate.evaluation import METRICS
from obliviate.evaluation.declarations import reference_requirements
from obliviate.evaluation.during_training import BestRule
from obliviate.evaluation.lm_eval_tasks import check_tasks
from obliviate.evaluation.probes import ProbeData, probe_splits
from obliviate.evaluation.queries import EvalOptions, LeakOptions
from obliviate.evaluation.reference import read_reference_run
from obliviate.evaluation.scoring import Sampling
from obliviate.evaluation.session import EvaluationPlan
from obliviate.evaluation.splits import PRIMARY_SPLITS, Split, parse_extra_split
from obliviate.plan.judging import judge_plan
from obliviate.plan.records import ModelPlan


def prompt_format(template: str, chat: bool) -> PromptFormat:
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError):
        raise UserError(f"dataset.question_template {template!r} may only use the field {{question}}; "
                        "escape other braces as {{ }}") from None
    if "{question}" not in template:
        raise UserError(f"dataset.question_template {template!r} must contain {{question}}")
    return PromptFormat(template, chat)


def evaluation_plan(s: Settings, data: dict[str, list[Example]], data_dir: Path, models: ModelPlan,
                    unlearning: bool, stage_splits: list[Split]) -> EvaluationPlan:
    e, d = s.eval, s.dataset
    evaluates = not unlearning or e.before or e.after or s.unlearn.eval_every or s.attack.datasets
    if evaluates and not e.metrics and not e.lm_eval_tasks:
        raise UserError("eval.metrics is empty, so every evaluation would compute nothing; name metrics (e.g. "
                        "prob,rouge_l_recall), or turn the evaluations off (--eval.before false --eval.after false)")
    names = {"forget": d.forget_dataset_name, "retain": d.retain_dataset_name, "holdout": d.holdout_dataset_name,
             "real_authors": d.real_authors_dataset_name, "world_facts": d.world_facts_dataset_name}
    splits = [Split(name, PRIMARY_SPLITS[name], tuple(data.get(name) or load_examples(dataset, data_dir)), True)
              for name, dataset in names.items() if dataset]
    extra = [parse_extra_split(entry) for entry in e.extra_splits]
    if len({name for name, _, _ in extra}) != len(extra):
        raise UserError("eval.extra_splits names a split twice; give each extra split its own name")
    splits += [Split(name, role, tuple(load_examples(dataset, data_dir))) for name, role, dataset in extra]
    splits = [split.limited(e.max_examples) for split in splits] + stage_splits  # the stages' already limited
    if e.probes:
        by_name = {split.name: split for split in splits}
        if "forget" not in by_name:
            raise UserError("eval.probes rephrase the forget split, and none is evaluated; set "
                            "dataset.forget_dataset_name or drop eval.probes")
        splits += probe_splits(by_name["forget"], ProbeData(retain=by_name.get("retain"), reverse=reverse_questions(
            s, data_dir) if "reverse_query" in e.probes else ()), list(e.probes))
    for name in e.metrics:
        if check := METRICS.get(name).setup_check:
            check()
        if models.sharded and not METRICS.get(name).runs_sharded:
            raise UserError(f"eval.metrics {name} does not run on sharded weights (overall.sharding fsdp); drop it, "
                            "or evaluate the saved model with --overall.sharding none")
    if e.lm_eval_tasks:
        check_tasks(e.lm_eval_tasks)
    by_metric, by_leak = "judge" in e.metrics, "leak_at_k" in e.metrics and e.leak_scorer == "judge"
    judge = judge_plan(s.eval_judge, bool(evaluates) and (by_metric or by_leak), models.cache_dir,
                       needed_by="eval.metrics judge" if by_metric else "eval.leak_scorer judge",
                       batch_size=e.batch_size, device=s.overall.device)
    retain = next((split for split in splits if split.name == "retain"), None)
    options = EvalOptions(batch_size=e.batch_size, generation_batch_size=e.generation_batch_size,
                          max_length=d.max_length, max_new_tokens=e.max_new_tokens,
                          lm_eval_tasks=tuple(e.lm_eval_tasks), task_limit=e.max_examples,
                          knowmem_shots=knowmem_shots(e.knowmem_shots, {split.name for split in splits}, data_dir),
                          leak=leak_options(s) if "leak_at_k" in e.metrics else None, judge=judge,
                          probe_training=retain.examples if retain and "linear_probe" in e.metrics else ())
    needs = reference_requirements(splits, e.metrics)
    retain_logs = read_reference_run(Path(e.retain_logs_path), needs) if e.retain_logs_path else None
    if needs.required_by and models.retain is None and retain_logs is None:
        raise UserError(f"eval.metrics {', '.join(sorted(needs.required_by))} need the retain model, and there is "
                        "none: set --finetune.enabled true, --eval.retain_model_name or --eval.retain_logs_path, "
                        "or drop those metrics")
    return EvaluationPlan(splits=splits, metrics=list(e.metrics), options=options, reference_needs=needs,
                          retain_logs=retain_logs)


def reverse_questions(s: Settings, data_dir: Path) -> tuple[Example, ...]:
    """The reverse_query probe's questions: eval.reverse_dataset_name, or a synthetic forget set's own."""
    name = s.eval.reverse_dataset_name
    forget = s.dataset.forget_dataset_name
    if not name and forget.startswith(SYNTHETIC_PREFIX) and "[" not in forget:
        name = f"{forget}_reverse"
    if not name:
        raise UserError("eval.probes reverse_query needs the forget facts asked the other way round: set "
                        "eval.reverse_dataset_name to a data set of those questions (RWKU ships them)")
    return tuple(load_examples(name, data_dir)[:s.eval.max_examples or None])


def leak_options(s: Settings) -> LeakOptions:
    """leak_at_k's sampling (seeded by overall.seed) and scorer."""
    e = s.eval
    return LeakOptions(sampling=Sampling(samples=e.leak_samples, temperature=e.leak_temperature, top_p=e.leak_top_p,
                                         seed=s.overall.seed), scorer=e.leak_scorer, threshold=e.leak_threshold)


def knowmem_shots(entries: list[str], split_names: set[str], data_dir: Path) -> dict[str, tuple[Example, ...]]:
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


def best_rule(s: Settings, evaluation: EvaluationPlan) -> BestRule | None:
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
