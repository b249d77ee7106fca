"""One generic registry: components register by name where they are defined.

Names are case-insensitive; the canonical spelling (as registered) is what the config and the
results folders show. Unknown names raise a :class:`UserError` listing the valid ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from obliviate.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → component table for one kind of component (methods, metrics, datasets, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[str, T]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("NPO")`` registers the decorated object under ``name``."""

        def decorate(item: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[key] = (name, item)
            return item

        return decorate

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name`` (case-insensitive), or a UserError with suggestions."""
        key = name.lower()
        if key not in self._items:
            names = self.names()
            close = difflib.get_close_matches(key, [n.lower() for n in names], n=1)
            hint = f" (did you mean '{self._items[close[0]][0]}'?)" if close else ""
            raise UserError(f"unknown {self.kind} '{name}'{hint}; valid: {', '.join(names)}")
        return self._items[key][0]

    def get(self, name: str) -> T:
        return self._items[self.canonical(name).lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def names(self) -> list[str]:
        return sorted(canonical for canonical, _ in self._items.values())

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.values(), key=lambda pair: pair[0]))
