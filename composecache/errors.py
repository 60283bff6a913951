"""The one error type users see, and the exit codes it maps to (docs/reference.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping

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


class StrictFallback(ComposecacheError):
    """COMPOSECACHE_STRICT=1 and composecache was about to build without (part of) the cache.

    Tests run in strict mode, so that none of them can pass on the fail-open path.
    """


def strict_mode(env: Mapping[str, str] | None = None) -> bool:
    """COMPOSECACHE_STRICT=1: internal errors and unexpected fallbacks raise instead of failing open."""
    return (os.environ if env is None else env).get("COMPOSECACHE_STRICT", "") == "1"
