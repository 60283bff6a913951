"""Messages to the user: one line each, on stderr, prefixed `composecache:`.

Work functions return data; only front-ends print, through this module.
Colour only on a terminal and never with NO_COLOR.
Hand-written, not rich: every build prints these lines, and importing rich.console costs ~55 ms (measured).
"""

from __future__ import annotations

import os
import re
import sys
from typing import TextIO

PREFIX = "composecache"
# C0/C1 controls (ESC, CR, BEL, ...) and the Unicode bidi controls (U+202E turns text around).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with control characters shown as escapes (`\\x1b`, `\\u202e`).

    Scope names come from compose files, branch names and, in the shared store, from other
    sessions: a name must not be able to drive the terminal it is shown on (an escape
    sequence, a carriage return that overwrites the line, a right-to-left override).
    """

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if keep_newlines and char in "\n\t":
            return char
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return _CONTROL.sub(escape, text)


def color_enabled(stream: TextIO, env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Output:
    """Where composecache's own lines go; honours --quiet and --verbose."""

    def __init__(self, *, verbose: int = 0, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.color = color_enabled(self.stream)

    def _emit(self, text: str, style: str | None = None) -> None:
        text = printable(text, keep_newlines=True)  # ours are one line each; compose's errors may not be
        if self.color and style:
            text = f"\x1b[{style}m{text}\x1b[0m"
        print(text, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self._emit(f"{PREFIX}: {message}", "2")

    def debug(self, message: str) -> None:
        if self.verbose > 0:
            self._emit(f"{PREFIX}: debug: {message}", "2")

    def warn(self, message: str) -> None:
        """A cache problem we fail open on: always shown, even with --quiet."""
        self._emit(f"{PREFIX}: warning: {message}", "33")

    def fall_back(self, message: str) -> None:
        """The one line that says the cache is off, for a service or the whole run, and why.

        Every path that drops the cache goes through here; --quiet hides the line.  With
        COMPOSECACHE_STRICT=1 it raises StrictFallback instead (tests must not pass on it).
        """
        from composecache.errors import StrictFallback, strict_mode

        if strict_mode():
            raise StrictFallback(f"strict mode: {message}")
        if not self.quiet:
            self._emit(f"{PREFIX}: warning: {message}", "33")

    def error(self, message: str, hint: str | None = None) -> None:
        self._emit(f"{PREFIX}: error: {message}", "31")
        if hint:
            self._emit(f"{PREFIX}: hint: {hint}", "2")
