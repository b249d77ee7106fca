"""SAM+NPO: NPO's forget gradient taken at the worst nearby weights (Fan et al., "Towards LLM Unlearning
Resilient to Relearning Attacks: A Sharpness-Aware Minimization Perspective and Beyond", ICML 2025,
arXiv 2502.05374, "Unlearn-Smooth"; public code OPTML-Group/Unlearn-Smooth, ``sam`` trainer of its MUSE and
WMDP code).

Sharpness-aware minimisation (Foret et al. 2021) of the forget loss, one step of it per micro-batch:

    g = ∇_θ L_f(θ),     ε = ρ · g / ‖g‖₂ (one global norm over the trainable parameters),
    L = γ·L_f(θ + ε) + α·L_retain(θ),   whose forget gradient is ∇L_f evaluated at θ + ε

L_f is NPO's sequence-level loss with its cached S_ref (:class:`~obliviate.methods.npo.NPOForget`); the
retain term is taken at θ. A flatter forget loss is what makes the forgetting survive relearning. The weights
are perturbed in place and restored from a saved copy (bit-exact), so no second model exists; only the
trainable parameters are perturbed (the adapter with LoRA; with a mask, every trainable parameter, the
mask then acting on the update as for every method).

Passes per micro-batch: forget forward+backward at θ (the perturbation), forget forward+backward at θ + ε,
retain forward+backward: three forward and three backward passes where NPO has two of each (1.5×).
Memory: one copy of the trainable weights and one of their gradient, besides NPO's.
"""

from __future__ import annotations

import torch
from fastargs import Param

from obliviate.config.checkers import FloatValue
from obliviate.methods.base import METHODS, Method
from obliviate.methods.npo import NPOForget
from obliviate.methods.objective import Batch, Objective, PrepareContext, Term
from obliviate.methods.terms import retain_term, weight_params

GRADIENT_FLOOR = 1e-12  # keeps ρ·g/‖g‖ finite when g = 0


def gradient_carrier(value: torch.Tensor, parameters: list[torch.nn.Parameter],
                     gradients: list[torch.Tensor | None]) -> torch.Tensor:
    """A scalar equal to ``value`` whose gradient with respect to each parameter is the given gradient:
    value + Σ⟨p, g⟩ − Σ⟨p, g⟩ (detached), so a backward pass through it deposits ``gradients`` (scaled by any
    weight applied to it) in ``.grad``."""
    carried = sum((p * g).sum() for p, g in zip(parameters, gradients) if g is not None)
    return value.detach() + carried - carried.detach()


class SharpnessAwareForget(Term):
    """A forget term whose gradient is taken at θ + ρ·g/‖g‖, g its own gradient at θ."""

    def __init__(self, inner: Term, rho: float) -> None:
        self.inner, self.rho = inner, rho
        self.name, self.split = f"sam_{inner.name}", inner.split

    @property
    def reads(self) -> set[str]:
        return self.inner.reads

    def prepare(self, context: PrepareContext) -> None:
        self.inner.prepare(context)

    def sharding_limit(self, adapters: bool) -> str | None:
        return ("takes the forget gradient with torch.autograd.grad inside the step, which crashes under FSDP2 "
                "(measured on torch 2.13)")

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        parameters = [p for p in model.parameters() if p.requires_grad]
        value = self.inner(model, batch)
        gradients = torch.autograd.grad(value, parameters, allow_unused=True, retain_graph=False)
        present = [g for g in gradients if g is not None]
        if not present:  # the forget term reaches no trainable parameter: nothing to perturb
            return value.detach()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
        scale = self.rho / norm.clamp(min=GRADIENT_FLOOR)
        saved = [p.detach().clone() for p in parameters]
        with torch.no_grad():
            for p, g in zip(parameters, gradients):
                if g is not None:
                    p.add_(g * scale)
        del gradients, present
        try:
            perturbed = self.inner(model, batch)
            gradients = torch.autograd.grad(perturbed, parameters, allow_unused=True)
        finally:
            with torch.no_grad():
                for p, start in zip(parameters, saved):
                    p.copy_(start)
        return gradient_carrier(perturbed, parameters, list(gradients))


@METHODS.register("SAM_NPO")
class SAMNPO(Method):
    """NPO with a sharpness-aware forget gradient: γ·L_NPO(θ + ρ·g/‖g‖)(f) + α·L_retain(θ)(r)."""

    params = {"beta": Param(FloatValue(low=1e-6), "inverse temperature β of NPO", default=0.1),
              "rho": Param(FloatValue(low=0.0), "ρ: radius of the weight perturbation", default=0.01),
              **weight_params(retain_choice=True)}

    @staticmethod
    def build(beta: float, rho: float, gamma: float, alpha: float, retain_loss: str) -> Objective:
        return SharpnessAwareForget(NPOForget(beta), rho) * gamma + retain_term(retain_loss) * alpha
