"""The override file that gives compose its cache settings.

Compose has no `--set` flag (that is `docker buildx bake`'s); an extra `-f`
file with `build.cache_from` / `build.cache_to` works on every Compose v2 with
cache_to (>= 2.4), and lists from several files are appended, so the user's
own cache settings stay.  The file holds local paths only; it is private
(0600 in a 0700 directory) and removed when compose exits.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from composecache.cached_build import CacheSlot

OVERRIDE_NAME = "composecache.override.yaml"


def _literal(value: str) -> str:
    """Compose interpolates every file it reads: `$` in a path must reach BuildKit as `$`."""
    return value.replace("$", "$$")


def override_document(slots: Mapping[str, CacheSlot]) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for service, slot in slots.items():
        build: dict[str, list[str]] = {}
        if slot.cache_from_entries:
            build["cache_from"] = [_literal(spec) for spec in slot.cache_from_entries]
        if slot.cache_to_entries:
            build["cache_to"] = [_literal(spec) for spec in slot.cache_to_entries]
        if build:
            services[service] = {"build": build}
    return {"services": services}


def dump_json(document: Any) -> str:
    """The override as compose reads it: JSON is YAML, and json is ~40 ms cheaper than a YAML library
    on every build's critical path.  (The dry-run shows the same document as YAML, for people.)"""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _private_dir() -> Path:
    """A new 0700 directory in the temp dir (tempfile.mkdtemp without tempfile's ~3 ms import)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    for _ in range(5):
        path = Path(base) / f"composecache-{os.urandom(6).hex()}"
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
        except OSError:
            break
    import tempfile

    return Path(tempfile.mkdtemp(prefix="composecache-"))


class OverrideFile:
    """A private temporary override file, removed on close."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.directory = _private_dir()
        self.path = self.directory / OVERRIDE_NAME
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(dump_json(document))

    def close(self) -> None:
        """Remove the directory and the files in it (the override; bake puts its model beside it)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                os.unlink(entry.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)

    def __enter__(self) -> OverrideFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
