"""Maximum-entropy forgetting: ME+GD (Yuan et al., "A Closer Look at Machine Unlearning for Large Language
Models", ICLR 2025, arXiv 2410.08109; seed 002).

On every answer token of a forget example the next-token distribution is pushed to the uniform one:

    L_ME = mean_{answer tokens t} KL( p_θ(·|x, y_<t) ‖ U ) = mean_t [ Σ_v p_θ(v) log p_θ(v) + log |V| ]

(= log |V| − the entropy; 0 when the model is maximally unsure), the paper's form. Unlike gradient ascent it
is bounded below, so it does not diverge. The public code (sail-sg/closer-look-LLM-unlearning
``trainer/losses.py`` ``get_me_loss``) calls ``F.kl_div(log p, u)``, which is KL(U ‖ p_θ) (a cross-entropy
with the uniform distribution); ``divergence uniform_to_model`` selects KL(U ‖ p_θ) on answer tokens. ME+GD adds
the retain NLL: L = γ·L_ME(f) + α·NLL(r) (the seed's forget_coeff and regularization_coeff).

The scale of γ depends on the averaging. sail-sg's TOFU script (``scripts/tofu/me_gd.sh``, γ = 0.1) runs with
``mask=false``: its mean runs over EVERY position of sequences padded to 500 tokens (question, answer and
padding), so each answer token weighs about |answer|/500 of what it weighs here. Seed 002's code averages over
the answer tokens, as we do (its ``--mask false`` is parsed by ``type=bool`` and so means true), and its README
runs γ = 0.7 and 1.0: our default is its 0.7, with the answer-token averaging that value was used with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fastargs import Param

from obliviate.config.checkers import ChoiceValue, FloatValue
from obliviate.likelihood import forward_logits, shifted
from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Batch, Objective, Term
from obliviate.methods.terms import NLL


def uniform_kl(logits: torch.Tensor, labels: torch.Tensor, divergence: str = "model_to_uniform",
               positions: str = "answer") -> torch.Tensor:
    """KL(p_θ ‖ U) (``model_to_uniform``) or KL(U ‖ p_θ) (``uniform_to_model``), averaged over the labelled
    (answer) positions, or with ``positions all`` over every position of the padded batch (prompt, answer and
    padding, as ULD's public ``UniformLossFunc``: ``kl_div(..., reduction="batchmean")`` over B·T rows)."""
    if positions == "all":
        mask = torch.ones(logits.shape[:-1], device=logits.device)
    else:
        logits, _, mask = shifted(logits, labels)
    log_p = F.log_softmax(logits, dim=-1)
    log_v = math.log(logits.shape[-1])
    if divergence == "model_to_uniform":
        kl = (log_p.exp() * log_p).sum(dim=-1) + log_v
    else:
        kl = -log_p.mean(dim=-1) - log_v
    return (kl * mask).sum() / mask.sum().clamp(min=1.0)


class MaxEntropyForget(Term):
    """KL(p_θ ‖ Uniform) (or KL(U ‖ p_θ)) on the answer tokens (or every position) of a split (forget for ME+GD;
    ULD's assistant uses it on retain)."""

    shares_forward = True

    def __init__(self, divergence: str, split: str = "forget", name: str = "me", positions: str = "answer") -> None:
        self.divergence, self.split, self.name, self.positions = divergence, split, name, positions

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        return uniform_kl(forward_logits(model, data), data.labels, self.divergence, self.positions)


@METHODS.register("ME_GD")
class MEGD(Method):
    """ME+GD: maximum entropy on forget answers + retain NLL."""

    params = {
        "gamma": Param(FloatValue(low=0.0), "weight of the maximum-entropy forget term (forget_coeff; seed 002's "
                       "README: 0.7)", default=0.7),
        "alpha": Param(FloatValue(low=0.0), "weight of the retain NLL (regularization_coeff)", default=1.0),
        "divergence": Param(ChoiceValue(["model_to_uniform", "uniform_to_model"]), "KL(p‖U) as the paper, or "
                            "KL(U‖p) as the public code", default="model_to_uniform"),
    }

    @staticmethod
    def build(gamma: float, alpha: float, divergence: str) -> Objective:
        return MaxEntropyForget(divergence) * gamma + NLL("retain") * alpha
