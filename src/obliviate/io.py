"""Atomic file writes (a reader never sees a half-written file) with the umask's permissions, locks between
processes, and reading a user's JSON file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from obliviate.errors import UserError


def permissions(directory: bool = False) -> int:
    """The mode a new file (or folder) gets under this process's umask, as ``open`` and ``mkdir`` give."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def exclusive_lock(path: Path, waiting: str = "") -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (a folder, or a lock file created if missing), held by this process
    until the block ends; another process asking for it waits (saying ``waiting`` first, when given)."""
    descriptor = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT, permissions())
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                logging.getLogger(__name__).info("%s", waiting)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path`` (with the permissions the
    umask gives any new file: ``mkstemp`` alone would make it private)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, permissions())
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


def flatten(tree: dict[str, Any], prefix: str = "", error: type[Exception] | None = None) -> dict[str, Any]:
    """A nested dict as dotted keys: {"a": {"b": 1}} -> {"a.b": 1}; keys starting with '_' (comments in config
    files, at any depth) are left out. With ``error``, one dotted key reached twice ({"a.b": 1, "a": {"b": 2}})
    raises it, naming both places; without, the later one wins."""
    flat: dict[str, Any] = {}
    where: dict[str, str] = {}
    for key, value in tree.items():
        if key.startswith("_"):
            continue
        dotted = f"{prefix}{key}"
        entries = flatten(value, dotted + ".", error) if isinstance(value, dict) else {dotted: value}
        for name, entry in entries.items():
            place = f'"{key}"' + (f" > {name.removeprefix(dotted + '.')!r}" if name != dotted else "")
            if error is not None and name in flat:
                raise error(f"key '{name}' is given twice, as {where[name]} and as {place}; keep one of them")
            flat[name], where[name] = entry, place
    return flat


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all distinct (JSON allows repeats; a repeat would silently win)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen


class DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON (a non-finite number is written as null)."""
    write_text_atomic(path, json.dumps(finite_or_null(data), indent=2, sort_keys=True, allow_nan=False) + "\n")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """A short hash of a file's bytes (for cache keys)."""
    return file_sha256(path)[:16]


def read_json_object(path: Path, what: str, hint: str, error: type[UserError] = UserError) -> dict[str, Any]:
    """The JSON object in the user's file ``path`` (called ``what`` in messages); ``error`` with one line
    saying what is wrong (``hint``: how to give an existing file) otherwise."""
    if path.is_dir():
        raise error(f"{what} '{path}' is a folder, not a file; {hint}")
    if not path.is_file():
        raise error(f"{what} '{path}' does not exist; {hint}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as failure:
        raise error(f"{what} '{path}' is not UTF-8 text (byte {failure.start}); save it as UTF-8 JSON") from None
    except json.JSONDecodeError as failure:
        raise error(f"{what} '{path}' is not valid JSON (line {failure.lineno}, column {failure.colno}: "
                    f"{failure.msg}); fix the file") from None
    except DuplicateKey as repeated:
        raise error(f"{what} '{path}' gives the key '{repeated.key}' twice in one object (the later would win "
                    "silently); keep one of them") from None
    if not isinstance(content, dict):
        raise error(f"{what} '{path}' must hold a JSON object")
    return content
