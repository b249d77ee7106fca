"""Preference-style forgetting: NPO and SimNPO.

Notation: S_θ(y) = Σ_t −log π_θ(y_t | x, y_<t), the SUM of answer-token NLL of one forget sequence;
|y| its number of answer tokens; σ the logistic sigmoid.

* NPO (Zhang et al. 2024, "Negative Preference Optimization", arXiv 2404.05868): a DPO loss with only a
  losing answer, log-ratio log π_θ(y)/π_ref(y) = S_ref(y) − S_θ(y):

      L_NPO = (2/β) · mean_i [ −log σ( −β · log π_θ(y_i)/π_ref(y_i) ) ]
            = (2/β) · mean_i [ −log σ( β · (S_θ(y_i) − S_ref(y_i)) ) ]

  It starts at (2/β)·log 2 and decreases as the forget answers become LESS likely than under the
  starting model (S_θ > S_ref). S_ref is computed once for the whole forget set before training.

* SimNPO (Fan et al. 2024, "Simplicity Prevails", arXiv 2410.07163): reference-free, length-normalised:

      L_SimNPO = (2/β) · mean_i [ −log σ( β · S_θ(y_i)/|y_i| − δ ) ]

  This is the paper's form (its margin γ is our δ, outside the β). open-unlearning's code
  (``src/trainer/unlearn/simnpo.py``) writes β·(S_θ/|y| − δ), the margin inside: the same loss at δ = 0
  (the default), and its δ equals ours divided by β otherwise. The OPTML TOFU code calls the margin
  ``gamma``; its WMDP code has none.

Both are combined with a retain term: L = γ·L_forget + α·L_retain, L_retain = NLL(r) or KL(π_ref‖π_θ)(r).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastargs import Param

from obliviate.config.checkers import FloatValue
from obliviate.likelihood import answer_nll, reference_sequence_nll, sequence_nll
from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Batch, Objective, PrepareContext, Term
from obliviate.methods.terms import retain_term, weight_params


def npo_loss(sequence_nll_current: torch.Tensor, sequence_nll_reference: torch.Tensor, beta: float) -> torch.Tensor:
    """(2/β)·mean[−log σ(β·(S_θ − S_ref))] for per-sequence NLL sums."""
    return -F.logsigmoid(beta * (sequence_nll_current - sequence_nll_reference)).mean() * 2.0 / beta


def simnpo_loss(sequence_nll_current: torch.Tensor, lengths: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """(2/β)·mean[−log σ(β·S_θ/|y| − δ)]."""
    return -F.logsigmoid(beta * sequence_nll_current / lengths.clamp(min=1.0) - delta).mean() * 2.0 / beta


class NPOForget(Term):
    """The NPO forget term; S_ref of every forget example is cached in :meth:`prepare`."""

    name = "npo"
    split = "forget"
    shares_forward = True
    reads_distribution = False

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.reference_nll: torch.Tensor | None = None

    def prepare(self, context: PrepareContext) -> None:
        self.reference_nll = reference_sequence_nll(context.model, context.datasets[self.split], context.batch_size,
                                                    context.device)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        if self.reference_nll is None:
            raise RuntimeError("NPOForget.prepare() must run before training")
        data = batch[self.split]
        current, _ = sequence_nll(*answer_nll(model, data))
        reference = self.reference_nll.to(current.device)[data.index]
        return npo_loss(current, reference, self.beta)


class SimNPOForget(Term):
    """The SimNPO forget term (no reference model)."""

    name = "simnpo"
    split = "forget"
    shares_forward = True
    reads_distribution = False

    def __init__(self, beta: float, delta: float) -> None:
        self.beta, self.delta = beta, delta

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        current, lengths = sequence_nll(*answer_nll(model, data))
        return simnpo_loss(current, lengths, self.beta, self.delta)


@METHODS.register("NPO")
class NPO(Method):
    """NPO + retain term: L = γ·L_NPO(f) + α·L_retain(r)."""

    params = {"beta": Param(FloatValue(low=1e-6), "inverse temperature β", default=0.1),
              **weight_params(1.0, retain_choice=True)}

    @staticmethod
    def build(beta: float, gamma: float, alpha: float, retain_loss: str) -> Objective:
        return NPOForget(beta) * gamma + retain_term(retain_loss) * alpha


@METHODS.register("SimNPO")
class SimNPO(Method):
    """SimNPO + retain term: L = γ·L_SimNPO(f) + α·L_retain(r)."""

    params = {
        "beta": Param(FloatValue(low=1e-6), "inverse temperature β", default=4.5),
        "delta": Param(FloatValue(), "reward margin δ", default=0.0),
        **weight_params(0.125, retain_choice=True),
    }

    @staticmethod
    def build(beta: float, delta: float, gamma: float, alpha: float, retain_loss: str) -> Objective:
        return SimNPOForget(beta, delta) * gamma + retain_term(retain_loss) * alpha
