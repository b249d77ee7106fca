"""Alternative answers to a split's questions, drawn once per question and fetched by batch row: refusals ("I
don't know", the IDK-style methods) or the record's perturbed (wrong) answers (DPO's default winner)."""

from __future__ import annotations

import random

import torch

from obliviate.data.examples import Example
from obliviate.data.tokenize import EncodedDataset, TokenBatch
from obliviate.errors import UserError
from obliviate.likelihood import reference_sequence_nll
from obliviate.methods.objective import PrepareContext

REFUSALS = "refusals"  # the split holding the refusal answers
KINDS = ("refusal", "perturbed")


class AlternativeAnswers:
    """Each example of ``split`` with an alternative answer (``kind``: refusal or perturbed), drawn with ``seed``
    once, encoded once in :meth:`prepare`, and fetched by the rows of a batch of that split."""

    def __init__(self, split: str, kind: str, seed: int) -> None:
        self.split, self.kind, self.seed = split, kind, seed
        self.encoded: EncodedDataset | None = None

    def _choices(self, example: Example, refusals: list[str]) -> list[str]:
        if self.kind == "refusal":
            return refusals
        if not example.perturbed_answers:
            raise UserError(f"a {self.split} example has no perturbed_answer to prefer ({example.question[:60]!r}); "
                            "use refusals as the winning answers (IdkDPO) or data with perturbed answers")
        return list(example.perturbed_answers)

    def prepare(self, context: PrepareContext) -> None:
        refusals = [example.answer for example in context.examples.get(REFUSALS, [])]
        if self.kind == "refusal" and not refusals:
            raise UserError("the refusal answers are empty; name a file of refusal answers (default "
                            "synthetic:refusals)")
        rng = random.Random(f"{self.seed}:{self.split}")
        questions = context.examples[self.split]
        self.encoded = context.encode([Example(e.question, rng.choice(self._choices(e, refusals)))
                                       for e in questions])

    def batch_for(self, rows: TokenBatch) -> TokenBatch:
        if self.encoded is None:
            raise RuntimeError("AlternativeAnswers.prepare() must run before training")
        return self.encoded.collate([self.encoded[int(i)] for i in rows.index]).to(rows.input_ids.device)

    def reference_nll(self, context: PrepareContext) -> torch.Tensor:
        """S_ref of every alternative answer under the starting model (by example index)."""
        if self.encoded is None:
            raise RuntimeError("AlternativeAnswers.prepare() must run first")
        return reference_sequence_nll(context.model, self.encoded, context.batch_size, context.device)
