"""The gradient-ascent family: GA, GradDiff and GA+KL.

* GA (Jang et al. 2023, "Knowledge Unlearning for Mitigating Privacy Risks in LMs"):
  L = −NLL(f). Diverges if run long; no retain term.
* GradDiff (Liu et al. 2022; TOFU's "grad_diff"): L = −γ·NLL(f) + α·NLL(r).
* GA+KL (TOFU's "KL"): L = −γ·NLL(f) + α·KL(π_ref ‖ π_θ) on r (reference distribution first, as TOFU;
  answer tokens only).
"""

from __future__ import annotations

from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Objective, Term
from obliviate.methods.terms import NLL, KLToReference, weight_params


@METHODS.register("GA")
class GA(Method):
    """Gradient ascent on the forget set: L = −NLL(f)."""

    @staticmethod
    def build() -> Objective:
        return -NLL("forget")


@METHODS.register("GradDiff")
class GradDiff(Method):
    """Gradient difference: L = −γ·NLL(f) + α·NLL(r)."""

    params = weight_params()

    @staticmethod
    def retain_term() -> Term:
        return NLL("retain")

    @classmethod
    def build(cls, gamma: float, alpha: float) -> Objective:
        return NLL("forget") * -gamma + cls.retain_term() * alpha


@METHODS.register("GA_KL")
class GAKL(GradDiff):
    """Gradient ascent with a KL retain regulariser: L = −γ·NLL(f) + α·KL(π_ref ‖ π_θ)(r)."""

    @staticmethod
    def retain_term() -> Term:
        return KLToReference("retain")
