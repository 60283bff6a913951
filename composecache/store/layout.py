"""Where everything lives in the shared cache directory, and creating/checking that layout.

    <cache dir>/composecache-store.json        layout marker {"format": ..., "layout": 1}
    <cache dir>/ns/<namespace>/                one trust domain (COMPOSECACHE_NAMESPACE)
        blobs/sha256/<hex>                     content-addressed blobs shared by every scope
        scopes/<scope>/index.json              one entry tagged "latest" -> the scope's cache manifest
        scopes/<scope>/blobs -> ../../blobs    so the scope dir is a complete OCI layout (cache_from src)
        scopes/<scope>/scope.json              original name, last use, last publish
        staging/<scope>.<random>/              a build's private cache_to dest (blobs -> ../../blobs)
        staging/<scope>.<random>.lock          flock held by the build for its whole life
        leases/<random>.lease                  flock held by a build importing a manifest (gc keeps its blobs)
        {staging,leases}/.<lock>.<random>.tmp  a new lock file, locked before it is linked to its name
        quarantine/                            corrupt scopes and blobs, kept for inspection
        locks/store.lock                       composecache's own store lock (never BuildKit's)

Namespaces have their own blobs as well as their own scopes: a writer of one
namespace cannot poison another's cache.  `<namespace>` and `<scope>` are
safe_dirname() of the caller's names.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from pathlib import Path
from typing import NamedTuple

from composecache.errors import CacheUnavailable
from composecache.store.naming import safe_dirname
from composecache.store.safefs import (
    DIR_MODE,
    FILE_MODE,
    NOT_WRITABLE,
    UnsafePath,
    atomic_write_json,
    check_dir,
    describe_os_error,
    ensure_dir,
    is_world_writable,
    read_json,
)

LAYOUT_VERSION = 1
MARKER_NAME = "composecache-store.json"
MARKER_FORMAT = "composecache-store"
BLOBS_LINK = "../../blobs"  # from scopes/<x>/blobs and staging/<x>/blobs to <ns>/blobs

HINT_MARKER = "if this directory is not a composecache store, use another COMPOSECACHE_DIR"
HINT_PERMISSIONS = "check the directory's owner and mode, or set COMPOSECACHE_DIR / --cache-dir elsewhere"


@functools.lru_cache(maxsize=8)
def _root(base: Path, namespace: str) -> Path:
    """<base>/ns/<namespace>: a build asks for it ~100 times (each path below it), so once."""
    return base / "ns" / safe_dirname(namespace)


@functools.lru_cache(maxsize=8)
def _blob_dir(base: Path, namespace: str) -> Path:
    return _root(base, namespace) / "blobs" / "sha256"


class Layout(NamedTuple):
    base: Path
    namespace: str

    @property
    def root(self) -> Path:
        return _root(self.base, self.namespace)

    @property
    def marker(self) -> Path:
        return self.base / MARKER_NAME

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def blob_dir(self) -> Path:
        return _blob_dir(self.base, self.namespace)

    @property
    def scopes(self) -> Path:
        return self.root / "scopes"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def store_lock(self) -> Path:
        return self.locks / "store.lock"

    def blob(self, hex_digest: str) -> Path:
        return self.blob_dir / hex_digest

    def scope_dir(self, scope: str) -> Path:
        return self.scopes / safe_dirname(scope)

    def directories(self) -> list[Path]:
        """Every directory of the layout, parents first."""
        ns = self.base / "ns"
        return [
            ns,
            self.root,
            self.blobs,
            self.blob_dir,
            self.scopes,
            self.staging,
            self.leases,
            self.quarantine,
            self.locks,
        ]


def _unavailable(layout: Layout, exc: OSError) -> CacheUnavailable:
    if isinstance(exc, UnsafePath):
        return CacheUnavailable(
            f"unsafe cache layout: {describe_os_error(exc)}",
            hint=f"something other than composecache made this entry; inspect or remove it ({layout.base})",
        )
    return CacheUnavailable(f"cannot use the cache at {layout.base}: {describe_os_error(exc)}", hint=HINT_PERMISSIONS)


def _check_base(layout: Layout) -> None:
    try:
        if not layout.base.is_dir():
            raise CacheUnavailable(
                f"the cache path {layout.base} is not a directory",
                hint="point COMPOSECACHE_DIR / --cache-dir at a directory",
            )
        if not os.access(layout.base, os.R_OK | os.X_OK):
            raise CacheUnavailable(f"the cache directory {layout.base} is not readable", hint=HINT_PERMISSIONS)
    except OSError as exc:
        raise _unavailable(layout, exc) from exc


def _check_marker(layout: Layout) -> bool:
    """True when the marker exists and is one we understand; CacheUnavailable when it is corrupt."""
    try:
        marker = read_json(layout.marker, limit=64 * 1024)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise CacheUnavailable(
            f"corrupt layout marker {layout.marker}: {exc}",
            hint=HINT_MARKER,
        ) from exc
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        raise CacheUnavailable(
            f"corrupt layout marker {layout.marker}",
            hint=HINT_MARKER,
        )
    version = marker.get("layout")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CacheUnavailable(f"corrupt layout marker {layout.marker}: layout {version!r}", hint=HINT_MARKER)
    if version > LAYOUT_VERSION:
        raise CacheUnavailable(
            f"the cache at {layout.base} has layout {version!r}; this composecache knows {LAYOUT_VERSION}",
            hint="upgrade composecache, or use another COMPOSECACHE_DIR",
        )
    return True


def check_existing(layout: Layout) -> None:
    """Read-only use: every part of the layout that exists must be a real directory."""
    _check_base(layout)
    _check_marker(layout)
    for directory in layout.directories():
        try:
            check_dir(directory)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _unavailable(layout, exc) from exc


def create(layout: Layout) -> bool:
    """Create what is missing; True when we can write, False for a read-only/unwritable store.

    Raises CacheUnavailable when the store cannot be used at all.
    """
    try:
        if not layout.base.exists():
            os.makedirs(layout.base, exist_ok=True)
            os.chmod(layout.base, DIR_MODE)  # only a directory we made: never re-mode the user's
    except OSError as exc:
        raise CacheUnavailable(
            f"cannot create the cache directory {layout.base}: {describe_os_error(exc)}", hint=HINT_PERMISSIONS
        ) from exc
    _check_base(layout)
    has_marker = _check_marker(layout)
    try:
        if not has_marker:
            atomic_write_json(layout.marker, {"format": MARKER_FORMAT, "layout": LAYOUT_VERSION})
        for directory in layout.directories():
            ensure_dir(directory)
        # The lock file doubles as the write probe: a read-only mount answers EROFS here.
        fd = os.open(layout.store_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        with contextlib.suppress(OSError):  # someone else's lock file in a shared group directory
            os.fchmod(fd, FILE_MODE)
        os.close(fd)
    except UnsafePath as exc:
        raise _unavailable(layout, exc) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _unavailable(layout, UnsafePath(errno.ELOOP, "is a symlink", exc.filename)) from exc
        if exc.errno in NOT_WRITABLE:
            check_existing(layout)  # usable for imports if what exists is sound
            return False
        raise _unavailable(layout, exc) from exc
    return True


def warnings_for(layout: Layout) -> list[str]:
    if is_world_writable(layout.base):
        return [f"{layout.base} is world-writable: any local user can plant cache entries there"]
    return []
