"""ILU: Invariant LLM Unlearning (Wang et al., ICML 2025, arXiv 2506.01339).

Any base unlearning objective ℓ_u (NPO, RMU, GradDiff, ...) plus an IRMv1-style invariance penalty over
fine-tuning "environment" data sets i (plain NLL ℓ_i on each):

    L = ℓ_u(θ) + λ · Σ_i ‖ ∇_w ℓ_i(w ∘ θ) |_{w=1} ‖²

Three forms of the dummy multiplier w (``w_form``):

* ``elementwise``: one w per weight, as the ILU paper writes w ∘ θ. By the chain rule
  ∇_w ℓ_i(w ∘ θ)|_{w=1} = θ ⊙ ∇_θ ℓ_i(θ), so the penalty is Σ_j (θ_j g_j)², g = ∇_θ ℓ_i over the trainable
  parameters;
* ``scalar``: one w multiplying every weight: (θᵀ g)²;
* ``logits``: one w multiplying the logits z, as IRMv1 writes it (Arjovsky et al., "Invariant Risk
  Minimization", 2019, §3.1: the dummy classifier w = 1.0 on top of the representation). Its gradient has a
  closed form in the logits: for the mean NLL over the answer tokens t (N of them, p_t = softmax(z_t)),

      ∂/∂w ℓ_i(w · z)|_{w=1} = (1/N) Σ_t (E_{v∼p_t}[z_{t,v}] − z_{t,y_t}),

  so the penalty (its square) is an ordinary function of the logits: one forward and the usual backward,
  no double backward through the weights and no eager attention.

The weight forms are computed with a real double backward (``create_graph=True``) and stay in the graph, so
they shape the update (public sibling code called ``.item()`` on it, making it a constant); their second
derivatives through attention need the eager attention implementation, which ``prepare`` sets. Which form
the paper's derivation supports: its objective puts w on the parameters (w ∘ θ, ``elementwise``), but it
derives the penalty from IRMv1, whose w is a scalar on the predictor's output; ``logits`` is that, with the
whole LLM as the representation. The penalty can be computed every k micro-batches (``every_k``; = steps
without gradient accumulation); its value and seconds are logged each time.
"""

from __future__ import annotations

import time

import torch
from fastargs import Param

from obliviate.config.checkers import ChoiceValue, FloatValue, IntValue, ListValue, StrValue
from obliviate.errors import UserError
from obliviate.likelihood import forward_logits, mean_nll, shifted, token_nll
from obliviate.methods.base import METHODS, Method, ModelFacts
from obliviate.methods.objective import Batch, CallCountingTerm, Objective, PrepareContext


def logit_scale_gradient(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∂/∂w of the mean answer-token NLL of w · ``logits`` at w = 1: (1/N) Σ_t (E_{p_t}[z_t] − z_{t,y_t})."""
    logits, targets, mask = shifted(logits, labels)
    expected = (logits.softmax(dim=-1) * logits).sum(dim=-1)
    true = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return ((expected - true) * mask).sum() / mask.sum().clamp(min=1)


class InvariancePenalty(CallCountingTerm):
    """Σ_i ‖θ ⊙ ∇_θ ℓ_i‖² (element-wise w), Σ_i (θᵀ∇_θ ℓ_i)² (scalar w) or Σ_i (∂ℓ_i(w·z)/∂w)² (w on the
    logits) over environment splits."""

    name = "ilu_penalty"
    split = "env0"

    def __init__(self, environments: list[str], w_form: str, every_k: int) -> None:
        self.environments, self.w_form, self.every_k = environments, w_form, every_k
        self.last: dict[str, float] = {}

    @property
    def reads(self) -> set[str]:
        return set(self.environments)

    def sharding_limit(self, adapters: bool) -> str | None:
        return None if self.w_form == "logits" else ("takes a double backward through the weights, which FSDP2 "
                                                     "does not support; use unlearn.ILU.w_form logits")

    def prepare(self, context: PrepareContext) -> None:
        if self.w_form != "logits":  # the double backward needs second derivatives of attention; SDPA has none
            context.model.set_attn_implementation("eager")

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        self.calls += 1
        parameters = [p for p in model.parameters() if p.requires_grad]
        if (self.calls - 1) % self.every_k:
            self.last = {"ilu_computed": 0.0, "ilu_seconds": 0.0}
            return torch.zeros((), device=parameters[0].device)
        start = time.perf_counter()
        penalty = torch.zeros((), device=parameters[0].device)
        for environment in self.environments:
            data = batch[environment]
            logits = forward_logits(model, data)
            if self.w_form == "logits":
                penalty = penalty + logit_scale_gradient(logits, data.labels) ** 2
                continue
            grads = torch.autograd.grad(mean_nll(*token_nll(logits, data.labels)), parameters, create_graph=True)
            if self.w_form == "elementwise":
                penalty = penalty + sum(((p * g) ** 2).sum() for p, g in zip(parameters, grads))
            else:
                penalty = penalty + sum((p * g).sum() for p, g in zip(parameters, grads)) ** 2
        self.last = {"ilu_computed": 1.0, "ilu_seconds": time.perf_counter() - start}
        return penalty

    def extra_logs(self) -> dict[str, float]:
        return self.last


@METHODS.register("ILU")
class ILU(Method):
    """ILU: a base method + λ · invariance penalty over fine-tuning environments."""

    params = {
        "base_method": Param(ChoiceValue(METHODS.names), "the unlearning objective made invariant (its own "
                             "section unlearn.<base> configures it)", default="NPO"),
        "lam": Param(FloatValue(low=0.0), "λ: weight of the invariance penalty", default=1.0),
        "w_form": Param(ChoiceValue(["elementwise", "scalar", "logits"]), "dummy multiplier w: one per weight, one "
                        "on all weights, or one on the logits (IRMv1; no double backward)", default="elementwise"),
        "environments": Param(ListValue(StrValue()), "fine-tuning data sets (same forms as dataset.*_name)",
                              default=[]),
        "every_k": Param(IntValue(low=1), "compute the penalty every k micro-batches", default=1),
    }

    @staticmethod
    def build(base: Objective, lam: float, w_form: str, environments: list[str], every_k: int) -> Objective:
        splits = [f"env{i}" for i in range(len(environments))]
        return base + InvariancePenalty(splits, w_form, every_k) * lam

    @property
    def base(self) -> Method:
        """The wrapped method, configured by its own section."""
        return self.resolve(self.values["base_method"])

    def objective(self) -> Objective:
        values = dict(self.values)
        if not values["environments"]:
            raise UserError("unlearn.ILU.environments is empty; name at least one fine-tuning data set")
        values.pop("base_method")
        return self.build(self.base.objective(), **values)

    def sections(self) -> set[str]:
        return {self.name} | self.base.sections()

    def check(self, model: ModelFacts) -> None:
        self.base.check(model)

    def datasets(self) -> dict[str, str]:
        return {**self.base.datasets(),
                **{f"env{i}": dataset for i, dataset in enumerate(self.values["environments"])}}
