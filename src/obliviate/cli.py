"""Shared entry-point behaviour: parse the config, turn user errors into one line and exit status 2, a run
that stopped (non-finite loss) into one line and status 1, Ctrl-C and SIGTERM into one line and status 130."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

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


def run(action: Callable[[Settings], object], prog: str, argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) into Settings and call ``action``; return the exit status."""
    configure_process()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        settings = parse_config(sys.argv[1:] if argv is None else argv, experiment_schema(), prog)
        action(settings)
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
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
