"""Strict value checkers for fastargs parameters.

fastargs 1.2.0's own checkers are lenient in ways that hurt (``bool("False")`` is True, ``int(2.9)``
is 2, lists arrive as raw strings). These subclasses of its ``Checker`` accept a value from a JSON file
(typed) or from the command line (a string), and raise ``ValueError`` whose message says what is
allowed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from fastargs.validation import Checker

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _describe_range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    if high is not None:
        return f" <= {high}"
    return ""


class _Ranged(Checker):
    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.low, self.high = low, high

    def _in_range(self, number: float) -> float:
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise ValueError(f"must be {self.help()}")
        return number


class IntValue(_Ranged):
    """An integer; rejects 2.9 instead of truncating it, and rejects booleans."""

    def check(self, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be {self.help()}")
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise ValueError(f"must be {self.help()}") from None
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"must be {self.help()} (a whole number)")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"must be {self.help()}")
        return int(self._in_range(value))

    def help(self) -> str:
        return "an integer" + _describe_range(self.low, self.high)


class FloatValue(_Ranged):
    """A finite real number (``1e-5`` and ``3`` both accepted)."""

    def check(self, value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"must be {self.help()}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be {self.help()}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be {self.help()} (finite)")
        return self._in_range(number)

    def help(self) -> str:
        return "a number" + _describe_range(self.low, self.high)


class BoolValue(Checker):
    """true/false, 1/0, yes/no (any case), from a file or the command line."""

    def check(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"must be {self.help()}")

    def help(self) -> str:
        return "a boolean (true/false/1/0)"


class StrValue(Checker):
    """Any string."""

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be {self.help()}")
        return value

    def help(self) -> str:
        return "a string"


MAX_NAME = 200  # characters of a folder name we make (file systems allow 255 bytes; ours add suffixes)


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain folder name (one path component inside its parent), or None."""
    if not name.strip():
        return "is empty"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name.startswith("."):
        return "starts with '.' (a hidden folder, or '..' leaving the parent)"
    if len(name.encode()) > MAX_NAME:
        return f"is longer than {MAX_NAME} bytes"
    return None


class FolderName(StrValue):
    """A plain folder name inside the results tree (one path component); empty only when ``optional``."""

    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def check(self, value: Any) -> str:
        value = super().check(value)
        if self.optional and value == "":
            return value
        if problem := folder_name_problem(value):
            raise ValueError(f"{problem}; must be {self.help()}")
        return value

    def help(self) -> str:
        return "a plain folder name (no '/', not starting with '.'" + (", or empty)" if self.optional else ")")


class FolderPath(StrValue):
    """A folder: any path, but not empty (an empty path would write into the working directory)."""

    def check(self, value: Any) -> str:
        value = super().check(value)
        if not value.strip():
            raise ValueError(f"is empty; must be {self.help()}")
        return value

    def help(self) -> str:
        return "a folder path (not empty)"


class ChoiceValue(Checker):
    """One of a set of strings, matched case-insensitively, returned in canonical spelling. The set may be given
    as a function (e.g. a registry's ``names``), read when a value is checked."""

    def __init__(self, choices: Sequence[str] | Callable[[], Sequence[str]]) -> None:
        self._choices = choices

    @property
    def choices(self) -> list[str]:
        return list(self._choices() if callable(self._choices) else self._choices)

    def check(self, value: Any) -> str:
        if isinstance(value, str):
            for choice in self.choices:
                if choice.lower() == value.lower():
                    return choice
        raise ValueError(f"must be {self.help()}")

    def help(self) -> str:
        return "one of " + "|".join(self.choices)


class RegisteredName(Checker):
    """The name of a registered component of one ``kind`` (the ``kind`` of its registry: "unlearning method",
    "metric", ...). Config knows no component: the composition root (:mod:`obliviate.experiment`) binds each kind
    to its registry's names, turning this into a :class:`ChoiceValue` (:func:`obliviate.config.spec.bind_names`)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def check(self, value: Any) -> str:
        raise ValueError(f"cannot be checked: no {self.kind} names are bound (assemble the schema with "
                         "obliviate.experiment.experiment_schema)")

    def help(self) -> str:
        return f"a registered {self.kind} name"


class ListValue(Checker):
    """A list: a JSON list in a file, or ``[a, b]`` / ``a,b`` on the command line; one value is a list of one."""

    def __init__(self, item: Checker) -> None:
        self.item = item

    def check(self, value: Any) -> list:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"must be {self.help()} (invalid JSON list)") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, list):
            value = [value]  # one value is a list of one
        items = []
        for position, element in enumerate(value):
            try:
                items.append(self.item.check(element))
            except ValueError as error:
                raise ValueError(f"item {position} ({element!r}) {error}") from None
        return items

    def help(self) -> str:
        return f"a list of ({self.item.help()})"
