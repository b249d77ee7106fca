"""The one way the engine reaches matplotlib: pyplot on the file-only Agg backend, imported when a figure is first
drawn, so a run that draws none (the default experiment) does not pay matplotlib's import (about 0.7 s here)."""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` with the Agg backend (figures go to files; no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot
