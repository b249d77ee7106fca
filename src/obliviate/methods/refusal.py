"""Targeted forgetting with refusal answers: IDK+AP (Yuan et al., "A Closer Look at Machine Unlearning for
Large Language Models", ICLR 2025, arXiv 2410.08109; seed 002; public code sail-sg/closer-look-LLM-unlearning
``trainer/losses.py``).

Each forget question gets a refusal answer ("I don't know", from ``refusals``, by default the project's
hundred in ``synthetic:refusals``) and so does each retain question, drawn once per example with ``seed``.
With S(a|q) the per-sequence SUM of answer-token NLL:

* IDK: NLL of the refusal after the forget question (mean over its answer tokens, the code's ``model(...).loss``);
* AP (answer preservation, reference-free): on retain questions, prefer the true answer to the refusal,

      L_AP = −(1/β) · mean_i log σ( β · ( S(idk_i | q_i) − S(a_i | q_i) ) ),   β = 0.1;

* total L = γ·IDK + δ·AP + α·NLL(retain). The public TOFU script uses γ = δ = 1 and no retain NLL (α = 0,
  our default); ``../shared/reference/methods.md`` adds one, which ``alpha`` gives.

The refusal sequences are encoded once (prepare) and fetched by each batch row's index, so the forget and
retain batches the loop draws keep their own refusal partners.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastargs import Param

from obliviate.config.checkers import FloatValue, IntValue, StrValue
from obliviate.errors import UserError
from obliviate.likelihood import answer_nll, mean_nll, sequence_nll
from obliviate.methods.alternatives import REFUSALS, AlternativeAnswers
from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Batch, Objective, PrepareContext, Term
from obliviate.methods.terms import NLL


def answer_preservation_loss(true_nll: torch.Tensor, refusal_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """−(1/β)·mean log σ(β·(S_refusal − S_true)) for per-sequence NLL sums."""
    return -F.logsigmoid(beta * (refusal_nll - true_nll)).mean() / beta


class RefusalNLL(Term):
    """IDK: NLL of refusal answers to the forget questions."""

    name = "idk"
    split = "forget"

    def __init__(self, seed: int) -> None:
        self.refusals = AlternativeAnswers(self.split, "refusal", seed)

    def prepare(self, context: PrepareContext) -> None:
        self.refusals.prepare(context)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        idk = self.refusals.batch_for(batch[self.split])
        return mean_nll(*answer_nll(model, idk))


class PooledRefusalNLL(Term):
    """TOFU's ``idk`` loss: ONE token mean of NLL over the refusal answers to the forget questions and the retain
    answers together, (Σ_{t∈idk} ℓ_t + Σ_{t∈retain} ℓ_t) / (N_idk + N_retain), as its single ``model(...).loss``
    over the concatenated batch (locuslab/tofu ``dataloader.py``, ``idk`` branch)."""

    name = "idk_pooled"
    split = "forget"

    def __init__(self, seed: int) -> None:
        self.refusals = AlternativeAnswers(self.split, "refusal", seed)

    @property
    def reads(self) -> set[str]:
        return {"forget", "retain"}

    def prepare(self, context: PrepareContext) -> None:
        self.refusals.prepare(context)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        totals, counts = [], []
        for data in (self.refusals.batch_for(batch[self.split]), batch["retain"]):
            nll, mask = answer_nll(model, data)
            totals.append(nll.sum())
            counts.append(mask.sum())
        return sum(totals) / sum(counts).clamp(min=1.0)


class AnswerPreservation(Term):
    """AP: keep each retain answer more likely than a refusal to the same question."""

    name = "ap"
    split = "retain"

    def __init__(self, beta: float, seed: int) -> None:
        self.beta = beta
        self.refusals = AlternativeAnswers(self.split, "refusal", seed)

    def prepare(self, context: PrepareContext) -> None:
        self.refusals.prepare(context)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        idk = self.refusals.batch_for(data)
        true_nll, _ = sequence_nll(*answer_nll(model, data))
        refusal_nll, _ = sequence_nll(*answer_nll(model, idk))
        return answer_preservation_loss(true_nll, refusal_nll, self.beta)


def refusal_params() -> dict[str, Param]:
    return {"refusals": Param(StrValue(), "refusal answers: a data set of texts (or of answers)",
                              default="synthetic:refusals")}


class RefusalMethod(Method):
    """A method that reads refusal answers (its ``refusals`` key names them)."""

    def objective(self) -> Objective:
        if not self.values["refusals"].strip():
            raise UserError(f"unlearn.{self.name}.refusals is empty; name a data set of refusal answers "
                            "(default synthetic:refusals)")
        return super().objective()

    def datasets(self) -> dict[str, str]:
        return {REFUSALS: self.values["refusals"]}


@METHODS.register("IDK_AP")
class IDKAP(RefusalMethod):
    """IDK+AP: refusals on forget questions + answer preservation on retain questions."""

    params = {
        "gamma": Param(FloatValue(low=0.0), "weight of the refusal NLL on forget questions (IDK)", default=1.0),
        "delta": Param(FloatValue(low=0.0), "weight of answer preservation on retain questions (AP)", default=1.0),
        "alpha": Param(FloatValue(low=0.0), "weight of the retain NLL (the public code has none)", default=0.0),
        "beta": Param(FloatValue(low=1e-6), "β of answer preservation", default=0.1),
        **refusal_params(),
        "seed": Param(IntValue(low=0), "seed of the refusal drawn for each question", default=0),
    }

    @staticmethod
    def build(gamma: float, delta: float, alpha: float, beta: float, refusals: str, seed: int) -> Objective:
        return RefusalNLL(seed) * gamma + AnswerPreservation(beta, seed) * delta + NLL("retain") * alpha
