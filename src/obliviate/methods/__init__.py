"""Unlearning methods: one module per family, each registering its methods in :data:`METHODS` when imported. Every
module of this package is imported here, so a new method is one new module (plus its config and test)."""

import importlib
import pkgutil

from obliviate.methods.base import METHODS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS"]
