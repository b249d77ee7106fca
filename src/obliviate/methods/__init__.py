"""Unlearning methods: one module per family, all registered in :data:`METHODS`."""

from obliviate.methods import gradient_ascent, ilu, npo, rmu  # noqa: F401  (registration)
from obliviate.methods.base import METHODS

__all__ = ["METHODS"]
