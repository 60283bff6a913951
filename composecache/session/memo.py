"""A session-local memo of answers from slow helper commands, keyed by everything they depend on.

Every `composecache up --build` needs the compose project (`compose config`,
100-300 ms) and what the tools can do (`compose version`, `buildx inspect`,
`docker info`: Go programs that take 60-100 ms of CPU each to start, on a
2-core machine).  Those answers change only when their inputs change, and the
inputs are cheap to fingerprint: the files' bytes, the variables they
interpolate, the stat of the binaries, of the docker config and of the
daemon's socket (a restarted daemon makes a new socket).  A hit skips the
commands; a miss runs them and records what they said.

The memo is the session's own, never the shared cache directory: another
session must not be able to plant answers.  It holds no secrets (the project
memo keeps which services build and their x-composecache settings, not build
args or environment).  Where: $COMPOSECACHE_MEMO_DIR, else
$XDG_CACHE_HOME/composecache-memo (~/.cache/composecache-memo); a 0700
directory of 0600 files, each written whole (temp file + rename), at most
MAX_ENTRIES of them.  COMPOSECACHE_MEMO=0 turns it off.  Any problem reading
or writing it is a miss, silently: the memo only ever saves time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from composecache.store.safefs import atomic_write_bytes

MEMO_ENV = "COMPOSECACHE_MEMO"
DIR_ENV = "COMPOSECACHE_MEMO_DIR"
MAX_ENTRIES = 128
MAX_ENTRY_BYTES = 1 << 20
SUFFIX = ".json"


def fingerprint(*parts: object) -> str:
    """A stable digest of JSON-able parts (the memo key)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def stamp(path: Path | str) -> str:
    """What changes when the file (or socket, or directory) at `path` is replaced or modified."""
    try:
        info = os.stat(path)
    except OSError:
        return "-"
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_mode:o}"


def content_stamp(path: Path | str, limit: int = MAX_ENTRY_BYTES) -> str:
    """A small file's content digest: for files that tools rewrite with the same content (buildx's `current`)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return "-"
    return hashlib.sha256(data).hexdigest() if len(data) <= limit else stamp(path)


def default_dir(env: Mapping[str, str]) -> Path | None:
    explicit = env.get(DIR_ENV)
    if explicit:
        return Path(explicit)
    base = env.get("XDG_CACHE_HOME") or (str(Path(env["HOME"]) / ".cache") if env.get("HOME") else "")
    return Path(base) / "composecache-memo" if base and os.path.isabs(base) else None


class Memo:
    """get/put of small JSON values by (kind, key); a Memo without a directory remembers nothing."""

    def __init__(self, directory: Path | None, *, writable: bool = True) -> None:
        self.directory = directory
        self.writable = writable

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, writable: bool = True) -> Memo:
        """The session's memo (writable=False: recall only, e.g. for --dry-run, which writes nothing)."""
        if (env.get(MEMO_ENV) or "1").strip().lower() in {"0", "false", "no", "off"}:
            return cls(None)
        return cls(default_dir(env), writable=writable)

    def _path(self, kind: str, key: str) -> Path | None:
        if self.directory is None or not kind.isidentifier():
            return None
        return self.directory / f"{kind}-{key[:40]}{SUFFIX}"

    def _usable_dir(self, create: bool) -> bool:
        """Ours alone: a directory owned by us that nobody else may write (else: no memo)."""
        assert self.directory is not None
        try:
            info = os.lstat(self.directory)
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.makedirs(self.directory.parent, mode=0o700, exist_ok=True)
                os.mkdir(self.directory, 0o700)
            except OSError:
                return False
            return True
        except OSError:
            return False
        return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077

    def get(self, kind: str, key: str) -> Any:
        path = self._path(kind, key)
        if path is None or not self._usable_dir(create=False):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_size > MAX_ENTRY_BYTES:
                    return None
                entry = json.loads(handle.read())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        return entry.get("value")

    def put(self, kind: str, key: str, value: Any) -> None:
        path = self._path(kind, key)
        if path is None or not self.writable or not self._usable_dir(create=True):
            return
        data = json.dumps({"key": key, "value": value}, sort_keys=True).encode()
        if len(data) > MAX_ENTRY_BYTES:
            return
        try:
            atomic_write_bytes(path, data, 0o600, durable=False)
        except OSError:
            return
        self._prune()

    def _prune(self) -> None:
        assert self.directory is not None
        try:
            entries = [entry for entry in os.scandir(self.directory) if entry.name.endswith(SUFFIX)]
            if len(entries) <= MAX_ENTRIES:
                return
            entries.sort(key=lambda entry: entry.stat(follow_symlinks=False).st_mtime_ns)
            for entry in entries[: len(entries) - MAX_ENTRIES]:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        except OSError:
            return
