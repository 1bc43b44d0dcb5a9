"""One exception base for everything namekeeper says went wrong with its input or surroundings.

The command line catches `NamekeeperError` and prints its message as one line (exit 2, or 3
for `IndexUnreachable`); anything else escaping is a bug. Messages never hold a secret.
"""

from __future__ import annotations


class NamekeeperError(Exception):
    """Base class: the message is one line a user can act on."""


class UsageError(NamekeeperError):
    """Bad input on the command line."""


class ConfigError(NamekeeperError):
    """The configuration is unusable; the message says which key and why."""


class InvalidName(NamekeeperError, ValueError):
    """A name or filename that cannot be a Python project; the message says why."""


class PlaceholderError(NamekeeperError):
    """The placeholder could not be rendered or built; the message says why."""


class StoreError(NamekeeperError):
    """The store cannot be opened or written (path not creatable, not a database, ...)."""


class IndexUnreachable(NamekeeperError):
    """An index (the public one, or a private one) could not be asked: try again later."""
