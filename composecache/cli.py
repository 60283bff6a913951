"""Entry point (placeholder while the front-ends are wired)."""

from __future__ import annotations

import sys

from composecache import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:
        print(f"composecache {__version__}")
        return 0
    print("usage: composecache [OPTIONS] COMPOSE_ARGS...", file=sys.stderr)
    return 2
