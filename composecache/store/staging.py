"""Private per-build export directories (cache_to dest) and import leases, each held by an flock.

Staging: `staging/<scope>.<random>/` with `blobs -> ../../blobs`, so BuildKit
skips blobs the store already has and writes new ones straight into the
shared store (by rename from the staging `ingest/`, so a blob appears whole
or not at all).  Its lock file `staging/<scope>.<random>.lock` is locked
before its name appears (made under a hidden temp name, then linked), the
name appears BEFORE the directory exists and is unlinked only AFTER the
directory is removed, so a staging directory whose lock is free (or missing)
belongs to a dead process: gc reclaims it and it is never published.

Lease: `leases/<random>.lease` names a manifest a running build imports; gc
keeps that manifest's blobs while the lease is held, even if the scope is
republished or evicted meanwhile.  A lease file is locked before its name
appears, like a staging lock.  Leases live until released or until the
process exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from composecache.store import oci
from composecache.store.layout import BLOBS_LINK, Layout
from composecache.store.locking import HeldLock, LockTimeout, create_and_lock
from composecache.store.safefs import (
    ensure_relative_link,
    read_small_file,
    remove_tree,
    unlink_quietly,
)

# A staging directory is one build's private workspace: the group may reclaim it (gc), others
# may not even enter it.  BuildKit creates its ingest/ in there with the build's umask (0777
# under umask 000), which must not make a live export writable by every local user.
STAGING_MODE = 0o2770
LOCK_SUFFIX = ".lock"
LEASE_SUFFIX = ".lease"
CREATE_ATTEMPTS = 5


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class Staging:
    """A build's private export directory; `cache_to` is what to hand to BuildKit."""

    __slots__ = ("cache_to", "lock", "path", "published_digest", "scope")

    def __init__(self, scope: str, path: Path, cache_to: str, lock: HeldLock) -> None:
        self.scope, self.path, self.cache_to, self.lock = scope, path, cache_to, lock
        self.published_digest: str | None = None

    def __repr__(self) -> str:
        return f"Staging(scope={self.scope!r}, path={self.path!r})"

    @property
    def index_path(self) -> Path:
        return self.path / "index.json"

    def staged_manifest(self) -> oci.Descriptor | None:
        """The manifest the last export into this staging points at (None: no export yet)."""
        try:
            return oci.select_cache_manifest(read_small_file(self.index_path))
        except (OSError, ValueError):
            return None

    def export_incomplete(self) -> bool:
        """BuildKit began an export here (its ingest/) but left no usable index.json: it failed.

        With ignore-error=true a failed export (a full disk, say) does not fail the build and
        leaves only this trace; a service that was not built leaves nothing but our blobs link.
        """
        if self.staged_manifest() is not None:
            return False
        try:
            return any(entry != "blobs" for entry in os.listdir(self.path))
        except OSError:
            return False

    def has_new_export(self) -> bool:
        """index.json is present and points somewhere new since the last publish."""
        staged = self.staged_manifest()
        return staged is not None and staged.digest != self.published_digest


def _new_locked_file(directory: Path, stem: str, suffix: str, content: bytes) -> tuple[str, HeldLock]:
    """A random `<stem>.<random><suffix>` lock file, locked before its name appears (create_and_lock)."""
    last: OSError | None = None
    for _ in range(CREATE_ATTEMPTS):
        name = f"{stem}.{os.urandom(8).hex()}"
        try:
            return name, create_and_lock(directory / f"{name}{suffix}", content)
        except (FileExistsError, FileNotFoundError, LockTimeout) as exc:  # the name or our temp name was taken
            last = exc
    assert last is not None
    raise last


def create_staging(layout: Layout, scope: str, stem: str) -> tuple[Path, HeldLock]:
    """Make a locked, empty staging dir for `scope` (the lock first, then the directory)."""
    owner = json.dumps({"scope": scope, "pid": os.getpid(), "created": time.time()}).encode()
    name, lock = _new_locked_file(layout.staging, stem, LOCK_SUFFIX, owner)
    path = layout.staging / name
    try:
        os.mkdir(path, STAGING_MODE)
        os.chmod(path, STAGING_MODE)
        ensure_relative_link(path / "blobs", BLOBS_LINK)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_tree(path)
        unlink_quietly(lock.path)
        lock.release()
        raise
    return path, lock


def remove_staging(path: Path, lock: HeldLock) -> None:
    """Directory first, then the lock file, then let go of the lock (see the module doc)."""
    try:
        remove_tree(path)
    finally:
        unlink_quietly(lock.path)
        lock.release()


def staging_lock_path(staging_dir: Path) -> Path:
    return staging_dir.with_name(staging_dir.name + LOCK_SUFFIX)


# --- import leases -------------------------------------------------------------------------------

_HELD_LEASES: dict[Path, HeldLock] = {}


def take_lease(layout: Layout, scope: str, manifest: oci.Descriptor) -> Path:
    """Record (and lock) that this process imports `manifest`; held until release or exit."""
    content = json.dumps(
        {"scope": scope, "digest": manifest.digest, "size": manifest.size, "pid": os.getpid()}
    ).encode()
    _, lock = _new_locked_file(layout.leases, "import", LEASE_SUFFIX, content)
    _HELD_LEASES[lock.path] = lock
    return lock.path


def release_lease(path: Path) -> None:
    lock = _HELD_LEASES.pop(path, None)
    if lock is not None:
        unlink_quietly(path)
        lock.release()


def lease_manifest(path: Path) -> oci.Descriptor | None:
    """The manifest a (held) lease protects."""
    try:
        value = json.loads(read_small_file(path, limit=64 * 1024))
        return oci.parse_descriptor({"digest": value.get("digest"), "size": value.get("size")})
    except (OSError, ValueError, AttributeError):
        return None
