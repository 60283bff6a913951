"""The one error type users see, and the exit codes it maps to (docs/reference.md)."""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ComposecacheError(Exception):
    """An expected failure: a message for the user and, where we know one, a hint."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(ComposecacheError):
    """The command line is wrong."""

    exit_code = EXIT_USAGE


class CacheUnavailable(ComposecacheError):
    """The shared cache cannot be used right now; callers fail open on it."""
