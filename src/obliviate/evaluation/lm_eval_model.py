"""The in-process model as lm-eval sees it: lm-eval's HFLM, with log-likelihoods that run each context once.

lm-eval builds the task, formats and tokenizes every (context, continuation) request (``TemplateLM.loglikelihood``:
trailing spaces of the context move to the continuation, the pair is tokenized whole and split at the context's
length; an empty context becomes the prefix token) and computes the metrics; only the forward passes are ours.
A multiple-choice question sends its context once per choice, and HFLM runs context + choice whole for each
(its source: "implement some kind of efficient-request-middleware that lumps together requests with the same
context"). Here the requests are grouped by context: the context runs once and every continuation goes on from its
key/value cache (:func:`~obliviate.evaluation.scoring.prefix_statistics`), batches divided over the processes; and a
request whose tokens were already scored by our own queries (``known``: a multiple-choice split's options are the
truth ratio's answers) is answered from them with no forward pass.
Per request the answer is lm-eval's: (Σ_t log p(y_t | context, y_<t), every y_t the argmax), the same numbers as
HFLM's to float rounding (tested; the log-softmax is taken in fp32, HFLM's in the model's dtype). A sequence
longer than the model's window loses context tokens from the left, as in HFLM (one more than there: our input
also holds the last continuation token).
"""

from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM

from obliviate.errors import UserError
from obliviate.evaluation.scoring import ScoredIndex, prefix_statistics
from obliviate.evaluation.spread import map_batches

Request = tuple[tuple[str, str], list[int], list[int]]  # lm-eval's: (strings), context tokens, continuation tokens


class SharedContextLM(HFLM):
    """HFLM over an in-process model whose ``_loglikelihood_tokens`` scores each distinct context once, and answers
    requests already in ``known`` without the model."""

    def __init__(self, *, known: ScoredIndex | None = None, **options) -> None:
        super().__init__(**options)
        self.known = known or ScoredIndex()

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        self.model.eval()
        by_context: dict[tuple[int, ...], list[int]] = {}
        continuations = []
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        for position, ((context, _), context_ids, continuation_ids) in enumerate(requests):
            if len(continuation_ids) >= self.max_length:
                raise UserError(f"an lm-eval continuation has {len(continuation_ids)} tokens, no fewer than the "
                                f"model's window of {self.max_length} (it follows {context[-50:]!r}); evaluate "
                                "this task with a model whose window is longer, or leave it out of eval.lm_eval_tasks")
            keep = self.max_length - len(continuation_ids)  # context + continuation fit the model's window
            continuations.append(continuation_ids)
            if (scored := self.known.find(context_ids[-keep:], continuation_ids)) is not None:
                answers[position] = (sum(scored.log_probs), all(scored.is_argmax))
                self.cache_hook.add_partial("loglikelihood", requests[position][0], answers[position])
            else:
                by_context.setdefault(tuple(context_ids[-keep:]), []).append(position)
        groups = list(by_context.items())
        size = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 1)
        chunks = [groups[start:start + size] for start in range(0, len(groups), size)]

        @torch.no_grad()
        def score(chunk: list[tuple[tuple[int, ...], list[int]]]) -> list[list[tuple[float, bool]]]:
            statistics = prefix_statistics(self.model, [list(context) for context, _ in chunk],
                                           [[continuations[row] for row in rows] for _, rows in chunk],
                                           [[False] * len(rows) for _, rows in chunk], self.tokenizer.pad_token_id)
            return [[(sum(stats.log_probs), all(stats.is_argmax)) for stats in group] for group in statistics]

        for chunk, scored in zip(chunks, map_batches(chunks, score, "scoring lm-eval choices")):
            for (_, rows), group in zip(chunk, scored):
                for row, answer in zip(rows, group):
                    answers[row] = answer
                    self.cache_hook.add_partial("loglikelihood", requests[row][0], answer)
        return answers
