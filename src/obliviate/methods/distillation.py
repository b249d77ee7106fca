"""Forgetting by distillation toward an adjusted distribution: UNDIAL and CE-U.

Both are cross-entropies H(q, p_θ) = −Σ_v q(v) log p_θ(v) toward a target distribution q at every answer
token of the forget batch (mean over the batch's answer tokens), q carrying no gradient:

* UNDIAL (Dong et al., "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large
  Language Models", NAACL 2025, arXiv 2402.10052; open-unlearning ``src/trainer/unlearn/undial.py``,
  ``compute_undial_loss``): q = softmax(z_ref − β·onehot(y_t)), the STARTING model's logits with the true
  token's logit lowered by β. q spans the vocabulary at every token, so it cannot be cached cheaply: it
  comes from the frozen starting model the KL terms use (:class:`~obliviate.methods.terms.StartingModel`:
  the adapters switched off with LoRA, else one copy). open-unlearning averages over every position of the
  batch (prompt and padding included, where its one-hot lands on token id V−100); we average over answer
  tokens. ``configs/trainer/UNDIAL.yaml``: β 10, γ 1, α 0 (the paper has no retain term).
* CE-U (Yang et al., "CE-U: Cross Entropy Unlearning", arXiv 2503.01224; open-unlearning ``ceu.py``):
  q = softmax(z_θ with the true token's logit set to −∞), from the model's OWN detached logits: the gradient
  w.r.t. z is p_θ − q, pushing the true token's probability to 0 and renormalising the rest as they are.
  The first ``ignore_first_n`` answer tokens of each sequence are skipped (default 1, as open-unlearning's
  ``ignore_first_n_answer_tokens``). No reference model, and no retain term in the paper (α 0).

Total: L = γ·H(q, p_θ)(f) + α·NLL(r).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastargs import Param

from obliviate.config.checkers import FloatValue, IntValue
from obliviate.likelihood import forward_logits, shifted
from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Batch, Objective, PrepareContext, Term
from obliviate.methods.terms import NLL, StartingModel, weight_params


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over ``mask``ed positions of −Σ_v q(v) log softmax(z)(v), ``target`` q detached."""
    per_position = -(target.detach() * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    mask = mask.float()
    return (per_position * mask).sum() / mask.sum().clamp(min=1.0)


def undial_target(reference_logits: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """softmax(z_ref − β·onehot(y))."""
    lowered = reference_logits.float().scatter_add(
        -1, targets.clamp(min=0).unsqueeze(-1), torch.full_like(targets, -beta, dtype=torch.float).unsqueeze(-1))
    return F.softmax(lowered, dim=-1)


def ceu_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """softmax(z with z_y = −∞), from the detached logits."""
    without_truth = logits.detach().float().scatter(-1, targets.clamp(min=0).unsqueeze(-1), float("-inf"))
    return F.softmax(without_truth, dim=-1)


def after_first_answer_tokens(mask: torch.Tensor, skipped: int) -> torch.Tensor:
    """``mask`` without the first ``skipped`` labelled positions of each row."""
    return mask & (mask.long().cumsum(dim=-1) > skipped)


class UNDIALForget(Term):
    """H(softmax(z_ref − β·onehot(y)), p_θ) on the forget answers."""

    name = "undial"
    split = "forget"
    shares_forward = True

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.reference = StartingModel()

    def prepare(self, context: PrepareContext) -> None:
        self.reference.prepare(context)

    def sharding_limit(self, adapters: bool) -> str | None:
        return self.reference.sharding_limit(adapters)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        logits, targets, mask = shifted(forward_logits(model, data), data.labels)
        reference, _, _ = shifted(self.reference.logits(model, data), data.labels)
        return soft_cross_entropy(logits, undial_target(reference, targets, self.beta), mask)


class CEUForget(Term):
    """H(softmax(z without the true token), p_θ) on the forget answers, after the first n answer tokens."""

    name = "ceu"
    split = "forget"
    shares_forward = True

    def __init__(self, ignore_first_n: int) -> None:
        self.ignore_first_n = ignore_first_n

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        logits, targets, mask = shifted(forward_logits(model, data), data.labels)
        return soft_cross_entropy(logits, ceu_target(logits, targets),
                                  after_first_answer_tokens(mask, self.ignore_first_n))


@METHODS.register("UNDIAL")
class UNDIAL(Method):
    """UNDIAL: self-distillation toward the starting model with the true token's logit lowered by β."""

    params = {"beta": Param(FloatValue(low=0.0), "β: how far the true token's logit is lowered", default=10.0),
              **weight_params(1.0, 0.0)}

    @staticmethod
    def build(beta: float, gamma: float, alpha: float) -> Objective:
        return UNDIALForget(beta) * gamma + NLL("retain") * alpha


@METHODS.register("CEU")
class CEU(Method):
    """CE-U: cross-entropy toward the model's own distribution without the true token."""

    params = {"ignore_first_n": Param(IntValue(low=0), "answer tokens skipped at the start of each answer",
                                      default=1), **weight_params(1.0, 0.0)}

    @staticmethod
    def build(ignore_first_n: int, gamma: float, alpha: float) -> Objective:
        return CEUForget(ignore_first_n) * gamma + NLL("retain") * alpha
