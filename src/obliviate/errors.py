"""User-facing errors.

Anything the user can fix (a misspelled key, a missing file, an impossible value, an offline hub id)
raises :class:`UserError` with one line naming the thing and the fix. Entry points turn it into
``error: <message>`` on stderr and exit status 2, before any long work starts.
"""


class UserError(Exception):
    """An error in the user's input: its message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """An invalid configuration (unknown key, wrong type, impossible value)."""


class RunFailed(Exception):
    """A run that stopped on its own (a non-finite loss, an interruption): the message says at which point,
    what is left on disk and what to do. Entry points print it as one line and exit with status 1."""


class NonFiniteStep(RunFailed):
    """A training step whose loss or gradient is not finite (raised before the step is applied)."""

    def __init__(self, step: int, logs: dict[str, float], stage: str = "train") -> None:
        terms = ", ".join(f"{key}={value:.4g}" for key, value in logs.items())
        super().__init__(f"{stage} step {step}: the loss or gradient is not finite ({terms}); the step was not "
                         "applied")
        self.step, self.logs = step, logs


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run, after its folder was marked failed: still a KeyboardInterrupt, so it
    stops whatever runs the experiment (a study), with a message saying what is left on disk."""
