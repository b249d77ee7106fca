"""How config sections are declared: a typed dataclass per section whose fields carry their fastargs ``Param``
(checker, description, default), so each key is declared once, with its type.

A key that names a registered component (a method, a metric, ...) is declared with
:class:`~obliviate.config.checkers.RegisteredName`; :meth:`SectionSpec.of` binds it to the names the composition
root passes, so config itself imports no component.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastargs import Param
from fastargs.validation import Checker

from obliviate.config.checkers import ChoiceValue, ListValue, RegisteredName

PARAM = "param"
Names = Mapping[str, Callable[[], Sequence[str]]]  # component kind -> its registered names


def option(checker: Checker, description: str, default: Any) -> Any:
    """A section field: its checker, its one-line description and its default."""
    return dataclasses.field(metadata={PARAM: Param(checker, description, default=default)})


def bind_names(checker: Checker, names: Names) -> Checker:
    """``checker`` with every :class:`RegisteredName` (also inside a list) replaced by a choice among ``names``."""
    if isinstance(checker, RegisteredName):
        return ChoiceValue(names[checker.kind])
    if isinstance(checker, ListValue):
        return ListValue(bind_names(checker.item, names))
    return checker


def bound_param(param: Param, names: Names) -> Param:
    return Param(bind_names(param.checker, names), param.desc, default=param.default)


@dataclass
class SectionSpec:
    """A config section: its one-line description and its parameters (fastargs ``Param`` objects)."""

    description: str
    params: dict[str, Param]

    @classmethod
    def of(cls, section: type, names: Names) -> "SectionSpec":
        """The spec of a section dataclass (its docstring's first line describes it), component names bound."""
        return cls((section.__doc__ or "").strip().splitlines()[0],
                   {field.name: bound_param(field.metadata[PARAM], names) for field in dataclasses.fields(section)})


Schema = dict[str, SectionSpec]
