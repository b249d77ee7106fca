"""Unlearning methods: one module per family, all registered in :data:`METHODS`."""

from obliviate.methods import gradient_ascent, npo, rmu  # noqa: F401  (registration)
from obliviate.methods import ilu  # noqa: F401,E402  (wraps the methods above, so registered last)
from obliviate.methods.base import METHODS

__all__ = ["METHODS"]
