"""Reusable loss terms: NLL on any split, and KL to the starting model."""

from __future__ import annotations

import contextlib
import copy

import torch

from obliviate.methods.base import Batch, PrepareContext, Term
from obliviate.methods.likelihood import forward_logits, mean_nll, token_kl
from obliviate.models.adapters import is_adapted, without_adapters


class NLL(Term):
    """NLL(x) = mean −log p_θ(y_t) over the answer tokens of ``batch[split]``."""

    def __init__(self, split: str) -> None:
        self.split = split
        self.name = f"{split}_nll"

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        return mean_nll(forward_logits(model, data), data.labels)


class KLToReference(Term):
    """KL(π_ref ‖ π_θ) per answer token of ``batch[split]``, π_ref the frozen starting model.

    The reference distribution changes with every batch and spans the whole vocabulary, so it cannot
    be cached cheaply. With LoRA (and for Offset unlearning, whose model with the assistant's adapters off is
    the target) it is the same model with its adapters switched off (no copy); otherwise
    this term keeps one frozen copy of the starting model (twice the weight memory).
    """

    def __init__(self, split: str) -> None:
        self.split = split
        self.name = f"{split}_kl"
        self.reference: torch.nn.Module | None = None

    def prepare(self, context: PrepareContext) -> None:
        if not is_adapted(context.model):
            self.reference = copy.deepcopy(context.model).eval().requires_grad_(False)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        data = batch[self.split]
        with torch.no_grad(), self._reference(model) as reference:
            reference_logits = forward_logits(reference, data)
        return token_kl(forward_logits(model, data), reference_logits, data.labels)

    def _reference(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[torch.nn.Module]:
        if self.reference is not None:
            return contextlib.nullcontext(self.reference)
        if is_adapted(model):
            return without_adapters(model)
        raise RuntimeError("KLToReference.prepare() must run before training")


def retain_term(kind: str) -> Term:
    """The retain regulariser named by a method's ``retain_loss`` key: ``nll`` (GD) or ``kl``."""
    return NLL("retain") if kind == "nll" else KLToReference("retain")
