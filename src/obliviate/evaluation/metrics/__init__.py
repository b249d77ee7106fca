"""Every metric module of this package registers its metrics when imported; all are imported here, so a new
metric is one new module (or a function in an existing one) and its test, nothing else."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
