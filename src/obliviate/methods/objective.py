"""Losses as small composable objects: terms, and the objective a method builds from them.

A method builds an :class:`Objective`, a weighted sum of :class:`Term` objects, so that it reads like its
formula: ``NPOForget(beta) * gamma + NLL("retain") * alpha``. Each term reads one split of the batch
(``"forget"``, ``"retain"``, ``"train"``), may cache reference-model quantities once in
:meth:`Term.prepare`, and reports its unweighted value in the logs.

Sign convention: the training loop MINIMISES ``Objective``. Gradient ascent on the forget set is
therefore a negative weight on the forget NLL (``-NLL("forget")``), and every logged term is the
positive quantity named (e.g. ``forget_nll`` rises as the model forgets).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from obliviate.data.examples import Example
from obliviate.data.tokenize import EncodedDataset, TokenBatch
from obliviate.likelihood import joint_forward

Batch = dict[str, TokenBatch]


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class PrepareContext:
    """What a term may use once, before training, to cache reference quantities: the model, the encoded
    splits it reads, (to build derived data such as refusal answers to the forget questions) every
    loaded split's examples and the experiment's encoder, and how many optimiser steps one pass over the
    forget set takes (for schedules counted in epochs, as PDU's warm-up)."""

    model: torch.nn.Module
    datasets: dict[str, EncodedDataset]
    batch_size: int
    device: torch.device
    examples: dict[str, list[Example]] = field(default_factory=dict)
    encode: Callable[[list[Example]], EncodedDataset] | None = None
    steps_per_epoch: int = 1


class Term(ABC):
    """One loss term computed on one split of the batch."""

    name: str
    split: str
    shares_forward: bool = False
    """The term reads the trained model only through one ``forward_logits`` or ``answer_nll`` of
    ``batch[self.split]``, so that pass may be one with other terms' splits (:meth:`Objective.joint_splits`)."""
    reads_distribution: bool = True
    """The term reads the whole next-token distribution (``forward_logits``); False when it reads only its answer
    tokens' NLL (``answer_nll``), so a joint pass runs the output head at those positions alone."""

    @property
    def reads(self) -> set[str]:
        """The batch splits this term reads (default: its own split)."""
        return {self.split}

    def prepare(self, context: PrepareContext) -> None:
        """Cache what the term needs from the starting model (default: nothing)."""

    def sharding_limit(self, adapters: bool) -> str | None:
        """Why this term cannot train sharded weights (FSDP), or None when it can (the default); ``adapters``:
        LoRA adapters train on the model."""
        return None

    def after_step(self, logs: dict[str, float]) -> None:
        """Update the term's own state once per optimiser step from the step's logs (averaged over its micro-batches
        and processes, so every process updates alike), e.g. PDU's dual variable (default: nothing)."""

    def state(self) -> dict[str, float]:
        """The term's own training state, saved with a resumable checkpoint (default: none)."""
        return {}

    def load_state(self, state: dict[str, float]) -> None:
        """Restore what :meth:`state` returned (default: nothing to restore)."""

    def extra_logs(self) -> dict[str, float]:
        """Values to log besides the term itself (default: none)."""
        return {}

    def artifacts(self) -> dict[str, torch.Tensor]:
        """Tensors to save with the run, e.g. a random control vector (default: none)."""
        return {}

    @abstractmethod
    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The term's scalar value on ``batch[self.split]``."""

    def __mul__(self, weight: float) -> "Objective":
        return Objective([(float(weight), self)])

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __add__(self, other: "Term | Objective") -> "Objective":
        return self * 1.0 + other


class CallCountingTerm(Term):
    """A term whose behaviour follows how often it was called (RMU cycles its topics by the count, ILU computes
    its penalty every k-th call); the count is its training state, so a resumed run continues the cycle."""

    calls: int = 0

    def state(self) -> dict[str, float]:
        return {"calls": self.calls}

    def load_state(self, state: dict[str, float]) -> None:
        self.calls = int(state["calls"])


class Objective:
    """Σ_k weight_k · term_k; terms with weight 0 are dropped (never computed)."""

    def __init__(self, terms: list[tuple[float, Term]]) -> None:
        self.terms = [(weight, term) for weight, term in terms if weight != 0.0]

    def __add__(self, other: "Term | Objective") -> "Objective":
        other_terms = other.terms if isinstance(other, Objective) else [(1.0, other)]
        return Objective(self.terms + other_terms)

    @property
    def splits(self) -> set[str]:
        return {split for _, term in self.terms for split in term.reads}

    def prepare(self, context: PrepareContext) -> None:
        for _, term in self.terms:
            term.prepare(context)

    def sharding_limits(self, adapters: bool) -> list[str]:
        """Why each term that cannot train sharded weights cannot (empty: every term can)."""
        return [f"{term.name} {reason}" for _, term in self.terms if (reason := term.sharding_limit(adapters))]

    def after_step(self, logs: dict[str, float]) -> None:
        for _, term in self.terms:
            term.after_step(logs)

    def state_dict(self) -> dict[str, dict[str, float]]:
        """Every term's own state (PDU's dual variable, RMU's topic counter), for accelerate's checkpoints."""
        return {f"{index}:{term.name}": term.state() for index, (_, term) in enumerate(self.terms)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        for index, (_, term) in enumerate(self.terms):
            term.load_state(state[f"{index}:{term.name}"])

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {key: value for _, term in self.terms for key, value in term.artifacts().items()}

    def joint_splits(self) -> list[str]:
        """The splits whose forward passes run as one (:func:`~obliviate.likelihood.joint_forward`): those of the
        terms when every term :attr:`~Term.shares_forward` and they read two or more splits; else none (a term
        that passes the model its own way — RMU's activations, ILU's double backward, SAM's perturbation, the
        refusal terms' derived batches — keeps one pass per split)."""
        splits = sorted({term.split for _, term in self.terms})
        return splits if len(splits) > 1 and all(term.shares_forward for _, term in self.terms) else []

    def __call__(self, model: torch.nn.Module, batch: Batch) -> LossOutput:
        total = torch.zeros((), device=next(model.parameters()).device)
        logs: dict[str, float] = {}
        splits = [split for split in self.joint_splits() if split in batch]
        every_position = [any(term.reads_distribution for _, term in self.terms if term.split == split)
                          for split in splits]
        together = [batch[split] for split in splits]
        with joint_forward(model, together, every_position) if len(together) > 1 else contextlib.nullcontext():
            for weight, term in self.terms:
                value = term(model, batch)
                total = total + weight * value
                logs[term.name] = value.item()
                logs.update(term.extra_logs())
        logs["loss"] = total.item()
        return LossOutput(total, logs)
