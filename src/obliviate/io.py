"""Atomic file writes (a reader never sees a half-written file), and reading a user's JSON file."""

from __future__ import annotations

import json
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


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json_object(path: Path, what: str, hint: str, error: type[UserError] = UserError) -> dict[str, Any]:
    """The JSON object in the user's file ``path`` (called ``what`` in messages); ``error`` with one line
    saying what is wrong (``hint``: how to give an existing file) otherwise."""
    if not path.is_file():
        raise error(f"{what} '{path}' does not exist; {hint}")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as failure:
        raise error(f"{what} '{path}' is not valid JSON (line {failure.lineno}, column {failure.colno}: "
                    f"{failure.msg}); fix the file") from None
    if not isinstance(content, dict):
        raise error(f"{what} '{path}' must hold a JSON object")
    return content
