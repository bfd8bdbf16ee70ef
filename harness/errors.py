"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


class HarnessError(Exception):
    """A user-facing error: bad input, missing data, unknown names."""


class ConfigError(HarnessError):
    """Invalid configuration, naming the file and the key at fault."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = ""
        if file and key:
            where = f"{file}: {key}: "
        elif file:
            where = f"{file}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")


class CapabilityError(HarnessError):
    """A backend cannot serve a request kind a task needs; raised before any work starts."""
