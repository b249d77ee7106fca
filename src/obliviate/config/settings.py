"""The resolved, validated configuration of one experiment."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _namespace(tree: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in tree.items()})


class Settings:
    """Read-only view of every key's final value: ``settings.unlearn.lr`` or ``settings["unlearn.lr"]``."""

    def __init__(self, flat: dict[str, Any]) -> None:
        self._flat = dict(flat)
        self._tree = _namespace(_nest(self._flat))

    def __getattr__(self, section: str) -> Any:
        if section.startswith("_"):
            raise AttributeError(section)
        return getattr(self._tree, section)

    def __getitem__(self, dotted: str) -> Any:
        return self._flat[dotted]

    def section(self, prefix: str) -> dict[str, Any]:
        """The keys directly under ``prefix`` (not its subsections), as a plain dict."""
        head = prefix + "."
        return {k[len(head):]: v for k, v in self._flat.items() if k.startswith(head) and "." not in k[len(head):]}

    def to_dict(self) -> dict[str, Any]:
        """Nested dict of all values: saved as config.json, and valid input for ``--config_file``."""
        return _nest(self._flat)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
