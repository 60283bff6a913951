"""The errors composecache raises on purpose, and the exit codes they map to (docs/reference.md).

ComposecacheError and its subclasses are expected failures: cli.py's boundary
prints their message (and hint) and exits with their code.  Any other
exception is a bug: the boundary writes a crash log and fails open.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader went away


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


class ToolError(ComposecacheError):
    """A helper command could not be run to the end; `exit_code` is what a shell would report."""


class ToolNotFound(ToolError):
    """The command does not exist (a shell's 127)."""

    exit_code = 127


class ToolNotExecutable(ToolError):
    """The command exists but may not be run (a shell's 126)."""

    exit_code = 126


class ToolTimedOut(ToolError):
    """The command did not answer in time and was killed (coreutils timeout's 124)."""

    exit_code = 124


class CacheUnavailable(ComposecacheError):
    """The shared cache cannot be used right now; callers fail open on it."""


class StrictFallback(ComposecacheError):
    """COMPOSECACHE_STRICT=1 and composecache was about to build without (part of) the cache.

    Tests run in strict mode, so that none of them can pass on the fail-open path.
    """


def strict_mode(env: Mapping[str, str] | None = None) -> bool:
    """COMPOSECACHE_STRICT=1: internal errors and unexpected fallbacks raise instead of failing open."""
    return (os.environ if env is None else env).get("COMPOSECACHE_STRICT", "") == "1"
