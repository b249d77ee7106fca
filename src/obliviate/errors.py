"""User-facing errors.

Anything the user can fix (a misspelled key, a missing file, an impossible value, an offline hub id)
raises :class:`UserError` with one line naming the thing and the fix. Entry points turn it into
``error: <message>`` on stderr and exit status 2, before any long work starts.
"""


class UserError(Exception):
    """An error in the user's input: its message says what is wrong and how to fix it."""


class ConfigError(UserError):
    """An invalid configuration (unknown key, wrong type, impossible value)."""
