"""How config sections are declared: a typed dataclass per section whose fields carry their fastargs ``Param``
(checker, description, default), so each key is declared once, with its type."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fastargs import Param
from fastargs.validation import Checker

PARAM = "param"


def option(checker: Checker, description: str, default: Any) -> Any:
    """A section field: its checker, its one-line description and its default."""
    return dataclasses.field(metadata={PARAM: Param(checker, description, default=default)})


@dataclass
class SectionSpec:
    """A config section: its one-line description and its parameters (fastargs ``Param`` objects)."""

    description: str
    params: dict[str, Param]

    @classmethod
    def of(cls, section: type) -> "SectionSpec":
        """The spec of a section dataclass (its docstring's first line describes it)."""
        return cls((section.__doc__ or "").strip().splitlines()[0],
                   {field.name: field.metadata[PARAM] for field in dataclasses.fields(section)})


Schema = dict[str, SectionSpec]
