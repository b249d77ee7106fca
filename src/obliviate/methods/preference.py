"""The preference family: DPO, IdkDPO and IDK.

Notation: S_θ(a) = Σ_t −log π_θ(a_t | q, a_<t), the per-sequence SUM of answer-token NLL; S_ref the same
under the starting model, computed ONCE for every forget example and its alternative answer before
training (no second model, as for NPO).

* DPO (Rafailov et al. 2023, "Direct Preference Optimization", arXiv 2305.18290), as open-unlearning
  applies it to unlearning (``src/trainer/unlearn/dpo.py``, ``compute_dpo_loss`` in ``src/trainer/utils.py``):
  on each forget question, a winning answer w is preferred to the true answer l:

      L_DPO = −(2/β) · mean_i log σ( β · [ (S_ref(w_i) − S_θ(w_i)) − (S_ref(l_i) − S_θ(l_i)) ] )

  The 2/β factor is open-unlearning's (standard DPO has none); it makes L start at (2/β)·log 2 like NPO.
  Our DPO's winners are the records' perturbed (wrong) answers (``win_answers perturbed``), one drawn per
  question with ``seed``; with ``win_answers refusal`` it is IdkDPO.
* IdkDPO (open-unlearning's DPO trainer with ``configs/experiment/unlearn/tofu/idk.yaml``): DPO whose winner is
  a refusal ("I don't know", from ``refusals``, the project's hundred by default). open-unlearning draws a new
  refusal each time an example is read; we draw one per question once, so S_ref(w) can be cached.
* IDK (TOFU's "idk" / preference optimisation, Maini et al. 2024): the NLL of a refusal after each forget
  question. TOFU (``dataloader.py``, ``idk``) takes ONE token mean over the refusal and retain answers together
  (``pooled``, the default: L = γ·(Σ_idk ℓ + Σ_retain ℓ)/(N_idk + N_retain)); ``pooled false`` adds two means,
  L = γ·NLL(refusal | f) + α·L_retain (seed 001's variant has no retain term: α = 0).

All three: L = γ·L_forget + α·L_retain, L_retain = NLL(r) or KL(π_ref‖π_θ)(r) (``retain_loss``).
Defaults from open-unlearning's ``configs/trainer/DPO.yaml``: β 0.1, γ 1, α 1, NLL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastargs import Param

from obliviate.config.checkers import BoolValue, FloatValue, IntValue
from obliviate.errors import UserError
from obliviate.likelihood import answer_nll, reference_sequence_nll, sequence_nll
from obliviate.methods.alternatives import AlternativeAnswers
from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Batch, Objective, PrepareContext, Term
from obliviate.methods.refusal import PooledRefusalNLL, RefusalMethod, RefusalNLL, refusal_params
from obliviate.methods.terms import retain_term, weight_params


def dpo_loss(win_nll: torch.Tensor, win_reference: torch.Tensor, lose_nll: torch.Tensor,
             lose_reference: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(β·[(S_ref(w) − S_θ(w)) − (S_ref(l) − S_θ(l))]) for per-sequence NLL sums."""
    margin = (win_reference - win_nll) - (lose_reference - lose_nll)
    return -F.logsigmoid(beta * margin).mean() * 2.0 / beta


class DPOForget(Term):
    """Prefer an alternative answer (a perturbed one, or a refusal) to the true answer of each forget question."""

    split = "forget"
    shares_forward = True
    reads_distribution = False

    def __init__(self, beta: float, win_answers: str, seed: int) -> None:
        self.beta = beta
        self.name = "idk_dpo" if win_answers == "refusal" else "dpo"
        self.winners = AlternativeAnswers(self.split, win_answers, seed)
        self.win_reference: torch.Tensor | None = None
        self.lose_reference: torch.Tensor | None = None

    def prepare(self, context: PrepareContext) -> None:
        self.winners.prepare(context)
        self.win_reference = self.winners.reference_nll(context)
        self.lose_reference = reference_sequence_nll(context.model, context.datasets[self.split], context.batch_size,
                                                     context.device)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        if self.win_reference is None or self.lose_reference is None:
            raise RuntimeError("DPOForget.prepare() must run before training")
        lose = batch[self.split]
        win = self.winners.batch_for(lose)
        lose_nll, _ = sequence_nll(*answer_nll(model, lose))
        win_nll, _ = sequence_nll(*answer_nll(model, win))
        rows = lose.index.to(self.win_reference.device)
        return dpo_loss(win_nll, self.win_reference[rows].to(win_nll.device), lose_nll,
                        self.lose_reference[rows].to(lose_nll.device), self.beta)


def _params(**extra: Param) -> dict[str, Param]:
    return {**extra, **weight_params(retain_choice=True),
            "seed": Param(IntValue(low=0), "seed of the alternative answer drawn for each question", default=0)}


@METHODS.register("DPO")
class DPO(Method):
    """DPO: prefer a perturbed (wrong) answer to the true one on forget questions + retain term."""

    params = _params(beta=Param(FloatValue(low=1e-6), "inverse temperature β", default=0.1))

    @staticmethod
    def build(beta: float, gamma: float, alpha: float, retain_loss: str, seed: int) -> Objective:
        return DPOForget(beta, "perturbed", seed) * gamma + retain_term(retain_loss) * alpha


@METHODS.register("IdkDPO")
class IdkDPO(RefusalMethod):
    """IdkDPO: prefer a refusal to the true answer on forget questions + retain term."""

    params = _params(beta=Param(FloatValue(low=1e-6), "inverse temperature β", default=0.1), **refusal_params())

    @staticmethod
    def build(beta: float, gamma: float, alpha: float, retain_loss: str, seed: int, refusals: str) -> Objective:
        return DPOForget(beta, "refusal", seed) * gamma + retain_term(retain_loss) * alpha


@METHODS.register("IDK")
class IDK(RefusalMethod):
    """IDK: NLL of a refusal after each forget question, pooled with the retain answers' NLL (or + retain term)."""

    params = _params(**refusal_params(),
                     pooled=Param(BoolValue(), "TOFU's one token mean over refusal and retain answers (false: "
                                  "γ·refusal NLL + α·retain term)", default=True))

    def objective(self) -> Objective:
        if self.values["pooled"] and (self.values["alpha"] != 1.0 or self.values["retain_loss"] != "nll"):
            raise UserError("unlearn.IDK.pooled takes one NLL mean over refusal and retain answers, with no separate "
                            "retain term to weigh (alpha) or choose (retain_loss); set pooled false, or alpha 1 and "
                            "retain_loss nll")
        return super().objective()

    @staticmethod
    def build(gamma: float, alpha: float, retain_loss: str, seed: int, refusals: str, pooled: bool) -> Objective:
        if pooled:
            return PooledRefusalNLL(seed) * gamma
        return RefusalNLL(seed) * gamma + retain_term(retain_loss) * alpha
