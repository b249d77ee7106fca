"""Reusable loss terms: NLL on any split, and KL to the starting model."""

from __future__ import annotations

import contextlib
import copy

import torch
from fastargs import Param

from obliviate.config.checkers import ChoiceValue, FloatValue
from obliviate.data.tokenize import TokenBatch
from obliviate.likelihood import answer_nll, forward_logits, mean_nll, token_kl
from obliviate.methods.objective import Batch, PrepareContext, Term
from obliviate.models.adapters import is_adapted, without_adapters


class NLL(Term):
    """NLL(x) = mean −log p_θ(y_t) over the answer tokens of ``batch[split]``."""

    shares_forward = True
    reads_distribution = False

    def __init__(self, split: str) -> None:
        self.split = split
        self.name = f"{split}_nll"

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        return mean_nll(*answer_nll(model, data))


class StartingModel:
    """The frozen starting model, for terms whose reference is a distribution over the vocabulary at every
    token (too large to cache): with adapters (LoRA, and Offset unlearning, whose model with the assistant's
    adapters off is the target) the same model with its adapters switched off, no copy; otherwise one frozen
    copy made in :meth:`prepare` (twice the weight memory)."""

    def __init__(self) -> None:
        self.copy: torch.nn.Module | None = None

    def prepare(self, context: PrepareContext) -> None:
        if not is_adapted(context.model):
            self.copy = copy.deepcopy(context.model).eval().requires_grad_(False)

    @staticmethod
    def sharding_limit(adapters: bool) -> str | None:
        """A frozen copy of sharded weights is not made; with adapters the starting model needs none."""
        return None if adapters else ("needs a frozen copy of the starting model, which is not made of sharded "
                                      "weights; set lora.enabled true (the model with its adapters off is then the "
                                      "starting model)")

    @torch.no_grad()
    def logits(self, model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
        """The starting model's logits on ``batch`` (no graph)."""
        with self._model(model) as reference:
            return forward_logits(reference, batch)

    def _model(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[torch.nn.Module]:
        if self.copy is not None:
            return contextlib.nullcontext(self.copy)
        if is_adapted(model):
            return without_adapters(model)
        raise RuntimeError("StartingModel.prepare() must run before training")


class KLToReference(Term):
    """KL(π_ref ‖ π_θ) per answer token of ``batch[split]``, π_ref the frozen :class:`StartingModel`."""

    shares_forward = True

    def __init__(self, split: str) -> None:
        self.split = split
        self.name = f"{split}_kl"
        self.reference = StartingModel()

    def prepare(self, context: PrepareContext) -> None:
        self.reference.prepare(context)

    def sharding_limit(self, adapters: bool) -> str | None:
        return self.reference.sharding_limit(adapters)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        return token_kl(forward_logits(model, data), self.reference.logits(model, data), data.labels)


def retain_term(kind: str) -> Term:
    """The retain regulariser named by a method's ``retain_loss`` key: ``nll`` (GD) or ``kl``."""
    return NLL("retain") if kind == "nll" else KLToReference("retain")


def weight_params(gamma: float = 1.0, alpha: float = 1.0, *, retain_choice: bool = False) -> dict[str, Param]:
    """The keys most methods share: ``gamma`` (weight of the forget term), ``alpha`` (weight of the retain term)
    and, with ``retain_choice``, ``retain_loss`` (which :func:`retain_term`)."""
    params = {"gamma": Param(FloatValue(low=0.0), "weight of the forget term", default=gamma),
              "alpha": Param(FloatValue(low=0.0), "weight of the retain term (0 disables it)", default=alpha)}
    if retain_choice:
        params["retain_loss"] = Param(ChoiceValue(["nll", "kl"]),
                                      "retain term: nll (GD) or kl (to the starting model)", default="nll")
    return params
