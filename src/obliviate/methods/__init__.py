"""Unlearning methods: one module per family, all registered in :data:`METHODS`."""

from obliviate.methods import entropy, gradient_ascent, ilu, logit_difference, npo, refusal, rmu  # noqa: F401  (registration)
from obliviate.methods.base import METHODS

__all__ = ["METHODS"]
