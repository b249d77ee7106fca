"""Unlearning methods: one module per family, all registered in :data:`METHODS`."""

from obliviate.methods import (  # noqa: F401  (registration)
    distillation,
    entropy,
    gradient_ascent,
    ilu,
    labels,
    logit_difference,
    npo,
    preference,
    primal_dual,
    refusal,
    rmu,
    sam,
    token_weighted,
)
from obliviate.methods.base import METHODS

__all__ = ["METHODS"]
