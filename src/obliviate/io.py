"""Atomic file writes (a reader never sees a half-written file), and reading a user's JSON file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from obliviate.errors import UserError


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def finite_or_null(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (strict JSON has no NaN)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_null(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(value) for value in data]
    return data


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys: {"a": {"b": 1}} -> {"a.b": 1}; keys starting with '_' (comments in config
    files, at any depth) are left out."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if key.startswith("_"):
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON (a non-finite number is written as null)."""
    write_text_atomic(path, json.dumps(finite_or_null(data), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json_object(path: Path, what: str, hint: str, error: type[UserError] = UserError) -> dict[str, Any]:
    """The JSON object in the user's file ``path`` (called ``what`` in messages); ``error`` with one line
    saying what is wrong (``hint``: how to give an existing file) otherwise."""
    if path.is_dir():
        raise error(f"{what} '{path}' is a folder, not a file; {hint}")
    if not path.is_file():
        raise error(f"{what} '{path}' does not exist; {hint}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as failure:
        raise error(f"{what} '{path}' is not UTF-8 text (byte {failure.start}); save it as UTF-8 JSON") from None
    except json.JSONDecodeError as failure:
        raise error(f"{what} '{path}' is not valid JSON (line {failure.lineno}, column {failure.colno}: "
                    f"{failure.msg}); fix the file") from None
    if not isinstance(content, dict):
        raise error(f"{what} '{path}' must hold a JSON object")
    return content
