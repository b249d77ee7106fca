"""Maximum-entropy forgetting: ME+GD (Yuan et al., "A Closer Look at Machine Unlearning for Large Language
Models", ICLR 2025, arXiv 2410.08109; seed 002).

On every answer token of a forget example the next-token distribution is pushed to the uniform one:

    L_ME = mean_{answer tokens t} KL( p_θ(·|x, y_<t) ‖ U ) = mean_t [ Σ_v p_θ(v) log p_θ(v) + log |V| ]

(= log |V| − the entropy; 0 when the model is maximally unsure), the paper's form. Unlike gradient ascent it
is bounded below, so it does not diverge. The public code (sail-sg/closer-look-LLM-unlearning
``trainer/losses.py`` ``get_me_loss``) calls ``F.kl_div(log p, u)``, which is KL(U ‖ p_θ) (a cross-entropy
with the uniform distribution), and its TOFU script counts every position (question and padding too);
``divergence uniform_to_model`` selects KL(U ‖ p_θ) on answer tokens. ME+GD adds the retain NLL:
L = γ·L_ME(f) + α·NLL(r) (the seed's forget_coeff, 0.1 in its TOFU script, and regularization_coeff, 1).
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


def uniform_kl(logits: torch.Tensor, labels: torch.Tensor, divergence: str = "model_to_uniform") -> torch.Tensor:
    """KL(p_θ ‖ U) (``model_to_uniform``) or KL(U ‖ p_θ) (``uniform_to_model``), averaged over the labelled
    (answer) positions."""
    logits, _, mask = shifted(logits, labels)
    log_p = F.log_softmax(logits, dim=-1)
    log_v = math.log(logits.shape[-1])
    if divergence == "model_to_uniform":
        kl = (log_p.exp() * log_p).sum(dim=-1) + log_v
    else:
        kl = -log_p.mean(dim=-1) - log_v
    return (kl * mask).sum() / mask.sum().clamp(min=1.0)


class MaxEntropyForget(Term):
    """KL(p_θ ‖ Uniform) (or KL(U ‖ p_θ)) on the answer tokens of a split (forget for ME+GD; ULD's assistant
    uses it on retain)."""

    def __init__(self, divergence: str, split: str = "forget", name: str = "me") -> None:
        self.divergence, self.split, self.name = divergence, split, name

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        return uniform_kl(forward_logits(model, data), data.labels, self.divergence)


@METHODS.register("ME_GD")
class MEGD(Method):
    """ME+GD: maximum entropy on forget answers + retain NLL."""

    params = {
        "gamma": Param(FloatValue(low=0.0), "weight of the maximum-entropy forget term (forget_coeff)", default=0.1),
        "alpha": Param(FloatValue(low=0.0), "weight of the retain NLL (regularization_coeff)", default=1.0),
        "divergence": Param(ChoiceValue(["model_to_uniform", "uniform_to_model"]), "KL(p‖U) as the paper, or "
                            "KL(U‖p) as the public code", default="model_to_uniform"),
    }

    @staticmethod
    def build(gamma: float, alpha: float, divergence: str) -> Objective:
        return MaxEntropyForget(divergence) * gamma + NLL("retain") * alpha
