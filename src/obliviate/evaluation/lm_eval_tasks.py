"""lm-eval's own tasks by name (``eval.lm_eval_tasks``: wmdp_bio, wmdp_cyber, wmdp_chem, mmlu, ...),
zero-shot on the in-process model (no reload from disk); their accuracy goes to ``metrics["lm_eval"]``.

lm-eval downloads each task's data from the hub (cais/wmdp, cais/mmlu) into the HF datasets cache.
Offline, a task whose data is not cached fails in setup, before any long work; local WMDP-format files
are evaluated instead as a data split with ``mcq_acc`` (our task YAML in lm-evaluation-harness/).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.errors import UserError
from obliviate.evaluation.scoring import ScoredIndex
from obliviate.evaluation.spread import agreed
from obliviate.hub import hub_offline

ACCURACY = "acc,none"


@lru_cache(maxsize=1)
def _all_tasks_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()  # indexes lm-eval's built-in tasks (~20 s on our machines; once per process)


def check_tasks(names: list[str]) -> None:
    """Unknown task names, or data that cannot be loaded, are errors now rather than after training."""
    manager = _all_tasks_manager()
    if unknown := [name for name in names if name not in manager.all_tasks]:
        raise UserError(f"eval.lm_eval_tasks: '{unknown[0]}' is not an lm-eval task; use lm-eval's names, e.g. "
                        "wmdp_bio, wmdp_cyber, wmdp_chem, wmdp, mmlu")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        manager.load_task_or_group(names)
    except Exception as error:  # datasets raises many types; all mean "the data is not available"
        where = "the hub is offline and the data is not cached" if hub_offline() else str(error).splitlines()[0]
        raise UserError(f"cannot load the data of lm-eval tasks {', '.join(names)}: {where}; run once where the hub "
                        "is reachable (the HF datasets cache keeps it), or evaluate a local WMDP-format file as a "
                        "data split with mcq_acc") from None


def _in_process_lm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                   known: ScoredIndex | None):
    from obliviate.evaluation.lm_eval_model import SharedContextLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return SharedContextLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, known=known)


def run_lm_eval(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int, **options) -> dict:
    """``lm_eval.simple_evaluate`` of the in-process model with ``options`` (tasks, task_manager, ...); its output on
    every process. lm-eval divides requests over processes only for models it loads itself (through its own
    accelerate launcher); with a model passed in, every process runs lm-eval whole, the log-likelihood batches
    (:class:`~obliviate.evaluation.lm_eval_model.SharedContextLM`) are divided over the processes and gathered
    (generation requests are not: each process generates all, as sharded weights need), and lm-eval returns the
    output on the main process, which shares it."""
    import lm_eval

    lm = _in_process_lm(model, tokenizer, batch_size, None)
    return agreed(lm_eval.simple_evaluate(model=lm, bootstrap_iters=0, verbosity="ERROR", **options))


def evaluate_task_configs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                          configs: list[dict], task_manager, known: ScoredIndex | None = None) -> dict:
    """``lm_eval.evaluate`` (lm-eval's public entry below ``simple_evaluate``) of our own zero-shot task configs on
    the in-process model, samples logged; its output on every process, divided as :func:`run_lm_eval`'s. What
    ``simple_evaluate`` adds around it is run metadata (an environment report that runs torch's ``collect_env``,
    about 0.4 s a call) that a per-split metric discards. Requests whose tokens are in ``known`` are not run
    again."""
    import lm_eval

    lm = _in_process_lm(model, tokenizer, batch_size, known)
    return agreed(lm_eval.evaluate(lm=lm, task_dict=task_manager.load(configs), bootstrap_iters=0, log_samples=True,
                                   verbosity="ERROR"))


def task_accuracies(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, names: list[str], batch_size: int,
                    limit: int) -> dict[str, float]:
    """Zero-shot accuracy of each named task (or group), on at most ``limit`` questions per task (0 = all)."""
    output = run_lm_eval(model, tokenizer, batch_size, tasks=list(names), task_manager=_all_tasks_manager(),
                         limit=limit or None)
    return {name: output["results"][name][ACCURACY] for name in names if ACCURACY in output["results"].get(name, {})}
