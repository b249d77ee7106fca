"""MUSE's metrics (Shi et al. 2024, arXiv 2407.06460; reference code swj0419/muse_bench ``eval.py``,
``metrics/verbmem.py``, ``metrics/knowmem.py``, ``metrics/privleak.py``, ``metrics/logger.py``).

* ``knowmem`` (KnowMem): ROUGE-L F1, WITHOUT stemming (MUSE's ``RougeEvalLogger``), of a greedy answer of at
  most 32 tokens to a few-shot prompt: every in-context example of ``eval.knowmem_shots`` as
  ``<prompt(question)> <answer>\\n\\n``, then the question's prompt; the answer is cut at MUSE's stop strings
  ("\\n\\n", "\\nQuestion", "Question:"). Template choice: the prompts use the experiment's
  ``dataset.question_template`` (or chat template) so a model fine-tuned on it is asked as it was trained;
  with the default ``Question: {question}\\nAnswer:`` this is MUSE's prompt but for the trailing space after
  "Answer:" (set the template to ``"Question: {question}\\nAnswer: "`` for MUSE's exact string).
* ``verbmem`` (VerbMem): ROUGE-L F1, without stemming, of the greedy continuation of each text's prefix
  (a ``{prompt, gt}`` record's prompt, else the text's first min(32 tokens, half)) against the true
  continuation (its first 128 tokens; MUSE cuts ``gt`` to 128 tokens counting the BOS).
* model level ``privleak``: (A_model − A_retain) / A_retain × 100 from Min-40 % membership AUCs in MUSE's
  orientation A = 1 − ``mia_min_k_auc`` (holdout as the positive class), A_retain from the retain model's
  evaluation (MUSE's own code falls back to fixed retrain AUCs, 0.4772 News / 0.5393 Books). Sign: 0 = leaks
  like the retain model; strongly NEGATIVE = under-unlearning (a fine-tuned target reads about −100);
  strongly POSITIVE = over-unlearning.
"""

from __future__ import annotations

from obliviate.data.tokenize import PromptFormat
from obliviate.evaluation.declarations import (
    MetricResult,
    ModelInputs,
    NotComputed,
    mean_of,
    membership_auc,
    metric,
    model_metric,
)
from obliviate.evaluation.queries import SplitScores
from obliviate.evaluation.rouge import rouge_l
from obliviate.evaluation.splits import Role

KNOWMEM_NEW_TOKENS = 32
KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")
PRIVLEAK_SCORE = "mia_min_k"  # MUSE's Min-40 % attack


def cut_at_stop_strings(text: str, stops: tuple[str, ...] = KNOWMEM_STOP_STRINGS) -> str:
    """The text before the first occurrence of each stop string, in turn (MUSE's get_prefix_before_words_occur)."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


def few_shot_prompt(fmt: PromptFormat, tokenizer, shots: list[tuple[str, str]], question: str) -> str:
    """The in-context examples, each '<prompt> <answer>' and a blank line, then the question's prompt.
    With the chat template the examples are earlier user/assistant turns."""
    if fmt.chat:
        turns = [message for q, a in shots for message in ({"role": "user", "content": q},
                                                            {"role": "assistant", "content": a})]
        return tokenizer.apply_chat_template([*turns, {"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    context = "".join(f"{fmt.prompt(tokenizer, q)}{'' if fmt.prompt(tokenizer, q)[-1:].isspace() else ' '}{a}\n\n"
                      for q, a in shots)
    return context + fmt.prompt(tokenizer, question)


@metric("knowmem", generates=True)
def knowmem(scores: SplitScores) -> MetricResult:
    """MUSE KnowMem: ROUGE-L F1 (no stemming) of few-shot greedy answers (32 tokens, MUSE's stop strings)."""
    shots = scores.options.knowmem_shots.get(scores.split.name, scores.options.knowmem_shots.get("", ()))
    pairs = [(e.question, e.answer) for e in shots]
    questions = scores.split.questions
    prompts = [few_shot_prompt(scores.fmt, scores.tokenizer, pairs, e.question) for e in questions]
    generated = [cut_at_stop_strings(text) for text in scores.generate(prompts, KNOWMEM_NEW_TOKENS)]
    values = rouge_l([(e.answer, g) for e, g in zip(questions, generated)], "fmeasure", stem=False)
    texts = [{"prompt": p, "ground_truth": e.answer, "generation": g} for p, e, g in zip(prompts, questions, generated)]
    return MetricResult(mean_of(values), values, texts)


@metric("verbmem", reads="text", generates=True)
def verbatim_memorisation(scores: SplitScores) -> MetricResult:
    """MUSE VerbMem: ROUGE-L F1 (no stemming) of each text prefix's greedy continuation against the truth."""
    continuations = scores.continuations
    values = rouge_l([(c.truth, c.generation) for c in continuations], "fmeasure", stem=False)
    return MetricResult(mean_of(values), values, scores.continuation_texts())


def privleak_from_aucs(model_auc: float, retain_auc: float) -> float:
    """MUSE PrivLeak from two forget-positive Min-K% AUCs (see the module docstring for the sign)."""
    muse_model, muse_retain = 1.0 - model_auc, 1.0 - retain_auc
    if muse_retain == 0:
        raise NotComputed("the retain model's Min-K% AUC is 1 (forget always recognised), so PrivLeak divides by 0")
    return (muse_model - muse_retain) / muse_retain * 100.0


@model_metric("privleak", triggered_by={PRIVLEAK_SCORE},
              reference=((Role.FORGET, PRIVLEAK_SCORE), (Role.HOLDOUT, PRIVLEAK_SCORE)))
def privleak(inputs: ModelInputs) -> float:
    """MUSE PrivLeak: relative gap of the Min-40 % membership AUC to the retain model's."""
    forget = inputs.one_primary(Role.FORGET, "dataset.forget_dataset_name")
    holdout = inputs.one_primary(Role.HOLDOUT, "dataset.holdout_dataset_name")
    model_auc = membership_auc(inputs.values(forget, PRIVLEAK_SCORE), inputs.values(holdout, PRIVLEAK_SCORE))
    auc = f"{PRIVLEAK_SCORE}_auc"
    retain = None if inputs.reference is None else inputs.reference.model.get(auc)
    if retain is None:
        raise NotComputed(f"needs the retain model's {auc}: set --finetune.enabled true, --eval.retain_model_name "
                          "or --eval.retain_logs_path (an evaluation of the retain model with mia_min_k)")
    return privleak_from_aucs(model_auc, retain)
