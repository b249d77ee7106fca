"""Shared entry-point behaviour: parse the config, turn user errors into one line and exit status 2, a run
that stopped (non-finite loss, a full or read-only disk) into one line and status 1, Ctrl-C and SIGTERM into one
line and status 130."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from collections.abc import Callable

from safetensors import SafetensorError

from obliviate.config.loader import HelpRequested, parse_config
from obliviate.config.settings import Settings
from obliviate.errors import Interrupted, RunFailed, UserError
from obliviate.experiment import experiment_schema

USER_ERROR_EXIT = 2
RUN_FAILED_EXIT = 1
INTERRUPTED_EXIT = 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a run the way Ctrl-C does: its folder is marked failed


def configure_process() -> None:
    """Logging (our INFO lines, others' warnings) and quiet tokenizer threads, for every entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("obliviate").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


FOLDERS = "logger.json.root, overall.cache_dir or dataset.data_dir"
STORAGE_HINTS = {errno.ENOSPC: f"the disk is full: free space there, or point {FOLDERS} elsewhere",
                 errno.EDQUOT: f"the disk quota is used up: free space, or point {FOLDERS} elsewhere",
                 errno.EROFS: f"the file system is read-only: point {FOLDERS} to a writable folder",
                 errno.EACCES: f"permission denied: point {FOLDERS} to a folder you may write",
                 errno.EPERM: f"not permitted: point {FOLDERS} to a folder you may write",
                 errno.ENAMETOOLONG: "a file name is too long: shorten logger.name or unlearn.task_name"}


def storage_problem(error: Exception) -> str | None:
    """One line for a failed write to disk (full, read-only, forbidden, a name too long), or None for anything
    else. safetensors reports its own I/O errors as text."""
    number = getattr(error, "errno", None)
    if number is None and isinstance(error, SafetensorError):
        text = str(error)
        number = next((code for code, words in ((errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only"),
                                                 (errno.EACCES, "Permission denied")) if words in text), None)
    if number not in STORAGE_HINTS:
        return None
    where = f" '{error.filename}'" if getattr(error, "filename", None) else ""
    return f"cannot write{where}: {STORAGE_HINTS[number]} (a stopped run keeps its logs in its .failed folder)"


def guarded(action: Callable[[], object]) -> int:
    """Run ``action`` as every entry point does: a user error is one line and exit status 2, a run that stopped
    (a non-finite loss, a full or read-only disk) one line and status 1, Ctrl-C and SIGTERM one line and 130."""
    configure_process()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        action()
    except HelpRequested as help_text:
        print(help_text.text, end="")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    except RunFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return RUN_FAILED_EXIT
    except Interrupted as interruption:
        print(f"error: {interruption}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except KeyboardInterrupt:
        print("error: interrupted before the run started; nothing was written", file=sys.stderr)
        return INTERRUPTED_EXIT
    except (OSError, SafetensorError) as error:
        if (line := storage_problem(error)) is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return RUN_FAILED_EXIT
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def run(action: Callable[[Settings], object], prog: str, argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) into Settings and call ``action`` (:func:`guarded`); the exit status."""
    return guarded(lambda: action(parse_config(sys.argv[1:] if argv is None else argv, experiment_schema(), prog)))
