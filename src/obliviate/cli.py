"""Shared entry-point behaviour: parse the config, turn user errors into one line and exit status 2."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from obliviate.config.loader import HelpRequested, parse_config
from obliviate.config.schema import experiment_schema
from obliviate.config.settings import Settings
from obliviate.errors import UserError

USER_ERROR_EXIT = 2


def configure_process() -> None:
    """Logging (our INFO lines, others' warnings) and quiet tokenizer threads, for every entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("obliviate").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(action: Callable[[Settings], object], prog: str, argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) into Settings and call ``action``; return the exit status."""
    configure_process()
    try:
        settings = parse_config(sys.argv[1:] if argv is None else argv, experiment_schema(), prog)
        action(settings)
    except HelpRequested as help_text:
        print(help_text.text, end="")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0
