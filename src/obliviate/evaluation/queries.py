"""The model queries of one split, computed on first use and shared by every metric that reads them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.data.examples import Example, content_hash
from obliviate.data.tokenize import PromptFormat, Query, example_query
from obliviate.evaluation.results import Evaluation, NotComputed, Reads
from obliviate.evaluation.scoring import (
    AnswerTokens,
    Sampling,
    ScoredIndex,
    answer_tokens,
    greedy_answers,
    sampled_answers,
)
from obliviate.evaluation.splits import Split, base_answer

CONTINUATION_PREFIX_TOKENS, CONTINUATION_TOKENS = 32, 128  # MUSE VerbMem: prefix, and the continuation scored


EXP_LIMIT = 700.0  # exp(±700) is finite and nonzero in float64


def bounded_exp(x: float) -> float:
    """exp(x) with x clipped to ±700: a collapsed model's ratio of two vanishing probabilities stays a finite,
    nonzero number (never an overflow, a division by zero or a NaN) and keeps its side of 1."""
    return math.exp(max(-EXP_LIMIT, min(EXP_LIMIT, x)))


@dataclass(frozen=True, kw_only=True)
class LeakOptions:
    """leak_at_k: how answers are sampled, and when a sample leaks (ROUGE-L recall >= threshold, or the judge)."""

    sampling: Sampling
    scorer: str  # "rouge" or "judge"
    threshold: float


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    batch_size: int
    max_length: int
    generation_batch_size: int = 0  # prompts per generation batch (0 = batch_size)
    max_new_tokens: int
    lm_eval_tasks: tuple[str, ...] = ()  # lm-eval's own tasks, evaluated once per model (not per split)
    task_limit: int = 0  # questions per lm-eval task (0 = all)
    knowmem_shots: dict[str, tuple[Example, ...]] = field(default_factory=dict)  # split ('' = any) -> ICL examples
    probe_training: tuple[Example, ...] = ()  # the linear probe's training examples (the retain split's)
    judge: Any = None  # the LLM judge (obliviate.evaluation.judge.Judge) or None
    leak: LeakOptions | None = None  # leak_at_k's sampling and scoring

    @property
    def generation_batch(self) -> int:
        return self.generation_batch_size or self.batch_size

    def cache_key(self) -> dict[str, Any]:
        """What of these options changes the numbers (an option left unset adds no key, so evaluations cached
        before it existed stay valid)."""
        key = {"batch_size": self.batch_size, "max_length": self.max_length, "max_new_tokens": self.max_new_tokens,
               "lm_eval_tasks": list(self.lm_eval_tasks), "task_limit": self.task_limit,
               "knowmem_shots": {split: content_hash(list(shots)) for split, shots in self.knowmem_shots.items()}}
        if self.generation_batch_size not in (0, self.batch_size):
            key["generation_batch_size"] = self.generation_batch_size
        if self.probe_training:
            key["probe_training"] = content_hash(list(self.probe_training))
        if self.judge is not None:
            key["judge"] = self.judge.identity
        if self.leak is not None:
            key["leak"] = asdict(self.leak)
        return key


class Continuation(NamedTuple):
    prefix: str
    truth: str
    generation: str


class SplitScores:
    """Everything metrics ask the model about one split; each query runs once, when first needed."""

    def __init__(self, split: Split, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
                 options: EvalOptions, reference: Evaluation | None = None, shared: dict[str, Any] | None = None,
                 score_options: bool = False) -> None:
        self.split, self.examples = split, list(split.examples)
        self.model, self.tokenizer, self.fmt, self.options = model, tokenizer, fmt, options
        self.reference = reference
        self.shared = {} if shared is None else shared  # one evaluation's memo of what no split owns (same model)
        self.score_options = score_options  # a metric will score the questions' options: score them with the answers
        self._scored: dict[Query, AnswerTokens] = {}  # every (prompt, answer) scored so far, whichever metric asked

    def prompt(self, question: str) -> str:
        return self.fmt.prompt(self.tokenizer, question)

    def tokens(self, queries: list[Query]) -> list[AnswerTokens]:
        """Each query's answer-token statistics; a query scored before on this split (the answer of ``prob`` and of
        the truth ratio on a knowledge split, the wrong options of both) is not scored again."""
        missing = list(dict.fromkeys(query for query in queries if query not in self._scored))
        if missing:
            self._scored.update(zip(missing, answer_tokens(self.model, self.tokenizer, missing,
                                                           self.options.max_length, self.options.batch_size)))
        return [self._scored[query] for query in queries]

    def scored_index(self) -> ScoredIndex:
        """Every answer scored so far, found by token ids (what lm-eval's requests are); each prompt tokenized once,
        as :func:`~obliviate.data.tokenize.encode` does."""
        index = ScoredIndex()
        prompt_ids: dict[str, list[int]] = {}
        for query, statistics in self._scored.items():
            if query.prompt:
                if query.prompt not in prompt_ids:
                    prompt_ids[query.prompt] = self.tokenizer(query.prompt)["input_ids"]
                index.add(prompt_ids[query.prompt], statistics)
        return index

    def nll(self, queries: list[Query]) -> list[float]:
        return [stats.mean_nll for stats in self.tokens(queries)]

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        return greedy_answers(self.model, self.tokenizer, prompts, max_new_tokens, self.options.generation_batch)

    def option_queries(self, example: Example) -> list[Query]:
        """A question's options after its prompt: the base answer of the split's role
        (:func:`~obliviate.evaluation.splits.base_answer`), then its wrong (perturbed) answers."""
        prompt = self.prompt(example.question)
        return [Query(prompt, answer) for answer in (base_answer(example, self.split.role), *example.perturbed_answers)]

    @cached_property
    def answer_tokens(self) -> list[AnswerTokens]:
        """Teacher-forced token statistics of each example's own answer or text (one forward pass, shared). When a
        metric will score the questions' options too (``score_options``), they are scored in the same pass: each
        prompt runs once for its answer and its options."""
        own = [example_query(self.tokenizer, e, self.fmt) for e in self.examples]
        if not self.score_options:
            return self.tokens(own)
        options = [query for e in self.split.questions for query in self.option_queries(e)]
        return self.tokens(own + options)[:len(own)]

    @cached_property
    def answers(self) -> list[tuple[Example, str]]:
        """(example, greedy answer to its question with the experiment's prompt) of each question."""
        questions = self.split.questions
        generated = self.generate([self.prompt(e.question) for e in questions], self.options.max_new_tokens)
        return list(zip(questions, generated))

    @cached_property
    def samples(self) -> list[list[str]]:
        """Sampled answers (``options.leak``) to each question with the experiment's prompt."""
        if self.options.leak is None:
            raise NotComputed("leak_at_k needs its sampling options (eval.leak_samples)")
        return sampled_answers(self.model, self.tokenizer, [self.prompt(e.question) for e in self.split.questions],
                               self.options.max_new_tokens, self.options.generation_batch, self.options.leak.sampling)

    def answer_texts(self) -> list[dict[str, str]]:
        """Prompt, ground truth and greedy answer of each question (what generating metrics keep)."""
        return [{"prompt": self.prompt(e.question), "ground_truth": e.answer, "generation": generated}
                for e, generated in self.answers]

    @cached_property
    def continuations(self) -> list[Continuation]:
        """Greedy continuations of each text's prefix, with the true continuation (MUSE VerbMem).

        The prefix is the record's own (``prompt`` of a ``{prompt, gt}`` record) or else the text's first
        min(32 tokens, half) tokens; the truth is the next (up to) 128 tokens; the model generates as many
        tokens as the longest truth of the split needs (at most 128; MUSE always generates 128)."""
        prefixes, truths, budget = [], [], 1
        for example in self.split.texts:
            ids = self.tokenizer(example.answer, add_special_tokens=False)["input_ids"]
            if example.prefix:
                prefix, rest = example.prefix, ids[:CONTINUATION_TOKENS]
            else:
                cut = min(CONTINUATION_PREFIX_TOKENS, len(ids) // 2)
                prefix, rest = self.tokenizer.decode(ids[:cut]), ids[cut:cut + CONTINUATION_TOKENS]
            prefixes.append(prefix)
            truths.append(self.tokenizer.decode(rest))
            budget = max(budget, len(rest))
        return [Continuation(*row) for row in zip(prefixes, truths, self.generate(prefixes, budget))]

    def continuation_texts(self) -> list[dict[str, str]]:
        """Prefix, true continuation and greedy continuation of each text (what generating metrics keep)."""
        return [{"prompt": c.prefix, "ground_truth": c.truth, "generation": c.generation} for c in self.continuations]

    @cached_property
    def truth_ratios(self) -> list[float | None]:
        """Per example R = P_perturbed / P_base (None without perturbed answers), both scored after the
        ORIGINAL question as in TOFU (``config/eval_everything.yaml``) and open-unlearning
        (``configs/eval/tofu.yaml`` ``question_key: question``): P = exp(−mean answer NLL),
        P_perturbed = exp(−mean_j NLL(perturbed_j)) (a geometric mean over the perturbed answers), the base
        answer :func:`~obliviate.evaluation.splits.base_answer` of the split's role."""
        usable = [e for e in self.split.questions if e.perturbed_answers]
        if not usable:
            raise NotComputed(f"no record of {self.split.name} has perturbed_answer (the wrong answers of the "
                              "truth ratio)")
        values = iter(self.nll([query for example in usable for query in self.option_queries(example)]))
        ratios: dict[int, float] = {}
        for example in usable:
            base = next(values)
            perturbed = [next(values) for _ in example.perturbed_answers]
            ratios[id(example)] = bounded_exp(base - sum(perturbed) / len(perturbed))
        return [ratios.get(id(e)) for e in self.split.questions]

    def reference_values(self, name: str, reads: Reads) -> list:
        """The retain model's per-example ``name`` (a metric that ``reads`` those examples) on this split
        (NotComputed when not known)."""
        values = None if self.reference is None else self.reference.per_example.get(self.split.name, {}).get(name)
        if values is None:
            raise NotComputed(f"needs the retain model's {name} on {self.split.name}: set --finetune.enabled true, "
                              "--eval.retain_model_name or --eval.retain_logs_path")
        scored = self.scored(reads)
        if len(values) != len(scored):
            raise NotComputed(f"the retain model's {name} on {self.split.name} has {len(values)} values for "
                              f"{len(scored)} examples: evaluate the retain model on the same data")
        return values

    def scored(self, reads: Reads) -> list[Example]:
        """The examples a metric that ``reads`` these gives one per-example value each, in order."""
        return {"qa": self.split.questions, "text": self.split.texts, "any": self.examples}[reads]
