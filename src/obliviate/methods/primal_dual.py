"""PDU: primal-dual unlearning (Entesari et al., "Constrained Entropic Unlearning: A Primal-Dual Framework for
Large Language Models", NeurIPS 2025, arXiv 2506.05314; open-unlearning ``src/trainer/unlearn/pdu.py``).

Unlearning as a constrained problem, min L_f(θ) subject to L_r(θ) ≤ ε, solved on its Lagrangian

    L(θ, λ) = γ·L_f(θ) + λ·(L_r(θ) − ε),        λ ← max(0, λ + η·(L_r − ε))  after each optimiser step

* forget: logit-margin flattening, L_f = mean over answer positions of (max_v z_v − mean_v z_v)², which is 0
  exactly when the logits are flat (the uniform distribution);
* retain: L_r = NLL on the retain batch; the dual variable λ starts at ``alpha`` and, after
  ``dual_warmup_epochs`` passes over the forget set (open-unlearning's ``dual_warmup_epochs``, 5 in its
  ``configs/trainer/PDU.yaml`` and TOFU script), rises while the constraint is violated and falls (to 0 at
  least) while it holds. λ is logged at every step (``dual``) and saved with the run (``pdu_dual``).

Differences from open-unlearning, each deliberate: its forget mask is the UNSHIFTED label mask (the logits
AT answer tokens, which predict the token after each one); ours is the shifted mask every loss here uses (the
logits that predict the answer tokens). It updates λ once per micro-batch with that micro-batch's L_r; we
update once per optimiser step with the mean L_r of its micro-batches and processes (the same with no
accumulation on one process), so every process holds the same λ. Both count the warm-up in epochs (ours turned
into optimiser steps: epochs × the steps of one pass over the forget set). It has no default
ε (its scripts use 0.3 on TOFU, 1.5/0.1 on MUSE); with ``eps`` 0 we set ε = ``eps_ratio`` × the starting
model's mean retain NLL (computed once in prepare), a constraint that means "retain NLL may grow by 10 %"
whatever the model's scale.
"""

from __future__ import annotations

import torch
from fastargs import Param

from obliviate.config.checkers import FloatValue
from obliviate.data.tokenize import IGNORE_INDEX
from obliviate.likelihood import answer_nll, forward_logits, mean_nll, reference_sequence_nll, shifted
from obliviate.methods.base import METHODS, Method
from obliviate.methods.objective import Batch, Objective, PrepareContext, Term


def logit_margin_flattening(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean over the positions predicting answer tokens of (max_v z_v − mean_v z_v)²."""
    logits, _, mask = shifted(logits, labels)
    margin = (logits.max(dim=-1).values - logits.mean(dim=-1)).pow(2)
    mask = mask.float()
    return (margin * mask).sum() / mask.sum().clamp(min=1.0)


def dual_ascent(dual: float, step_size: float, violation: float) -> float:
    """λ ← max(0, λ + η·(L_r − ε))."""
    return max(0.0, dual + step_size * violation)


class LogitMarginForget(Term):
    """L_f: the squared margin between the top logit and the mean logit on the forget answers."""

    name = "logit_margin"
    split = "forget"
    shares_forward = True

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        return logit_margin_flattening(forward_logits(model, data), data.labels)


class DualRetainConstraint(Term):
    """λ·(L_r − ε) with the dual variable λ updated by :func:`dual_ascent` after each optimiser step."""

    name = "retain_constraint"
    split = "retain"
    shares_forward = True
    reads_distribution = False

    def __init__(self, initial_dual: float, step_size: float, warmup_epochs: float, eps: float, eps_ratio: float
                 ) -> None:
        self.dual, self.step_size, self.warmup_epochs = initial_dual, step_size, warmup_epochs
        self.warmup_steps = 0  # set in prepare, from the steps of one epoch
        self.eps, self.eps_ratio = eps, eps_ratio
        self.steps = 0
        self.last_retain_nll = 0.0

    def prepare(self, context: PrepareContext) -> None:
        self.warmup_steps = round(self.warmup_epochs * context.steps_per_epoch)
        if self.eps == 0.0:
            retain = context.datasets[self.split]
            sums = reference_sequence_nll(context.model, retain, context.batch_size, context.device)
            counts = sum(sum(label != IGNORE_INDEX for label in item.labels[1:]) for item in retain.encoded)
            self.eps = self.eps_ratio * float(sums.sum()) / max(1, counts)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        retain_nll = mean_nll(*answer_nll(model, data))
        self.last_retain_nll = retain_nll.item()
        return self.dual * (retain_nll - self.eps)

    def after_step(self, logs: dict[str, float]) -> None:
        """The violation is the step's mean retain NLL (over its micro-batches and processes) minus ε."""
        self.steps += 1
        if self.steps > self.warmup_steps:
            self.dual = dual_ascent(self.dual, self.step_size, logs["retain_nll"] - self.eps)

    def state(self) -> dict[str, float]:
        return {"dual": self.dual, "steps": self.steps, "eps": self.eps}

    def load_state(self, state: dict[str, float]) -> None:
        self.dual, self.steps, self.eps = float(state["dual"]), int(state["steps"]), float(state["eps"])

    def extra_logs(self) -> dict[str, float]:
        return {"retain_nll": self.last_retain_nll, "dual": self.dual, "eps": self.eps}

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {"pdu_dual": torch.tensor([self.dual]), "pdu_eps": torch.tensor([self.eps])}


@METHODS.register("PDU")
class PDU(Method):
    """Primal-dual unlearning: γ·(max z − mean z)²(f) + λ·(NLL(r) − ε), λ by dual ascent."""

    params = {
        "gamma": Param(FloatValue(low=0.0), "weight of the logit-margin forget term", default=1.0),
        "alpha": Param(FloatValue(low=0.0), "starting value of the dual variable λ", default=1.0),
        "dual_step_size": Param(FloatValue(low=0.0), "η: step of the dual ascent on λ", default=1.0),
        "dual_warmup_epochs": Param(FloatValue(low=0.0), "passes over the forget set before λ starts to move "
                                    "(open-unlearning: 5)", default=5.0),
        "eps": Param(FloatValue(low=0.0), "retain constraint ε on the retain NLL (0: eps_ratio × the starting "
                     "model's mean retain NLL)", default=0.0),
        "eps_ratio": Param(FloatValue(low=0.0), "ε relative to the starting retain NLL, used when eps is 0",
                           default=1.1),
    }

    @staticmethod
    def build(gamma: float, alpha: float, dual_step_size: float, dual_warmup_epochs: float, eps: float,
              eps_ratio: float) -> Objective:
        constraint = DualRetainConstraint(alpha, dual_step_size, dual_warmup_epochs, eps, eps_ratio)
        return LogitMarginForget() * gamma + constraint * 1.0
