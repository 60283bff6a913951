"""What the store must keep: the mark phase shared by gc, prune and stats.

Roots are every scope's index (its manifest and the blobs the manifest
names), the index.json of every staging directory whose lock is held (a
build exporting right now) and every held import lease (a build importing
right now).  Blobs a running export has written but not yet indexed are
protected by their mtime: gc sweeps no orphan newer than the oldest live
export (nor newer than its grace period).  An orphan a running export
found already present (so BuildKit skipped writing it) has no such
protection; if gc removes it, that export's publish is dropped.

The hidden temp names a lock file is made under before it is linked to its
name are never opened here (gc removes the old ones a killed process left).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from composecache.store import oci, scopes
from composecache.store.layout import Layout
from composecache.store.locking import HeldLock, probe
from composecache.store.safefs import read_small_file, remove_tree, unlink_quietly
from composecache.store.staging import LEASE_SUFFIX, LOCK_SUFFIX, lease_manifest

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BlobFile:
    hex: str
    size: int
    mtime: float

    @property
    def digest(self) -> str:
        return f"sha256:{self.hex}"


@dataclass(frozen=True)
class ScopeRefs:
    path: Path
    name: str
    last_used: float
    digests: frozenset[str]


@dataclass
class Roots:
    scope_refs: list[ScopeRefs] = field(default_factory=list)
    broken: list[tuple[Path, scopes.ScopeProblem]] = field(default_factory=list)
    empty_scopes: list[Path] = field(default_factory=list)
    protected: set[str] = field(default_factory=set)  # live staging and leases
    live_staging: int = 0
    # When the oldest live export began (or last published): blobs renamed into the store after
    # that may belong to it, before its index exists.  gc sweeps no orphan newer than this.
    oldest_live_export: float | None = None
    # Dead staging keeps our probe lock until reclaimed or released.  A lock at its name is locked
    # from its first instant (locking.create_and_lock), so free means its owner is done or dead.
    dead_staging: list[tuple[Path, HeldLock | None]] = field(default_factory=list)
    live_leases: int = 0
    dead_leases: list[Path] = field(default_factory=list)

    @property
    def referenced(self) -> set[str]:
        found: set[str] = set()
        for scope in self.scope_refs:
            found |= scope.digests
        return found

    @property
    def kept(self) -> set[str]:
        return self.referenced | self.protected

    def release(self) -> None:
        for _, lock in self.dead_staging:
            if lock is not None:
                lock.release()


def blob_files(layout: Layout) -> list[BlobFile]:
    """Every blob file in the shared store (regular files named by a sha256 hex digest)."""
    found = []
    try:
        with os.scandir(layout.blob_dir) as entries:
            for entry in entries:
                if not oci.HEX_RE.match(entry.name):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append(BlobFile(entry.name, info.st_size, info.st_mtime))
    except FileNotFoundError:
        pass
    return found


def _manifest_closure(layout: Layout, manifest: oci.Descriptor) -> set[str]:
    """The manifest and every blob it names (as far as the manifest is readable)."""
    digests = {manifest.digest}
    with contextlib.suppress(OSError, ValueError):
        digests |= {d.digest for d in oci.manifest_references(read_small_file(layout.blob(manifest.hex)))}
    return digests


def _scope_roots(layout: Layout, roots: Roots, progress: Progress | None) -> None:
    dirs = list(scopes.scope_dirs(layout))
    for done, scope_dir in enumerate(dirs, 1):
        try:
            content = scopes.inspect_scope(layout, scope_dir, check_sizes=False)
        except scopes.ScopeProblem as problem:
            roots.broken.append((scope_dir, problem))
            continue
        except OSError as exc:
            roots.broken.append((scope_dir, scopes.ScopeProblem(scopes.BAD_INDEX, str(exc))))
            continue
        if content is None:
            roots.empty_scopes.append(scope_dir)
        else:
            digests = frozenset(d.digest for d in content.all_blobs)
            roots.scope_refs.append(
                ScopeRefs(scope_dir, scopes.display_name(scope_dir), scopes.last_used(scope_dir), digests)
            )
        if progress is not None:
            progress("reading scopes", done, len(dirs))


def _staging_roots(layout: Layout, roots: Roots) -> None:
    try:
        entries = set(os.listdir(layout.staging))
    except FileNotFoundError:
        return
    locks = {e for e in entries if e.endswith(LOCK_SUFFIX)}
    dirs = {e for e in entries if not e.endswith(LOCK_SUFFIX) and not e.startswith(".")}
    # A directory listed without its lock may be brand new (its lock created while we listed):
    # look again. The lock is created before the directory and removed after it.
    locks |= {d + LOCK_SUFFIX for d in dirs if os.path.lexists(layout.staging / (d + LOCK_SUFFIX))}
    for lock_name in sorted(locks):
        staging_dir = layout.staging / lock_name[: -len(LOCK_SUFFIX)]
        try:
            held = probe(layout.staging / lock_name)
        except FileNotFoundError:
            continue  # its owner finished meanwhile
        except OSError:
            continue  # not ours to judge (a planted entry); verify reports the store, gc leaves it
        if held is None:
            roots.live_staging += 1
            with contextlib.suppress(OSError):
                since = os.lstat(layout.staging / lock_name).st_mtime
                roots.oldest_live_export = min(since, roots.oldest_live_export or since)
            staged = _staged_manifest(staging_dir)
            if staged is not None:
                roots.protected |= _manifest_closure(layout, staged)
        else:
            roots.dead_staging.append((staging_dir, held))
    for dir_name in sorted(dirs):
        if dir_name + LOCK_SUFFIX not in locks:
            roots.dead_staging.append((layout.staging / dir_name, None))


def _staged_manifest(staging_dir: Path) -> oci.Descriptor | None:
    try:
        return oci.select_cache_manifest(read_small_file(staging_dir / "index.json"))
    except (OSError, ValueError):
        return None


def _lease_roots(layout: Layout, roots: Roots) -> None:
    try:
        entries = sorted(e for e in os.listdir(layout.leases) if e.endswith(LEASE_SUFFIX))
    except FileNotFoundError:
        return
    for entry in entries:
        path = layout.leases / entry
        try:
            held = probe(path)
        except OSError:
            continue
        if held is None:
            roots.live_leases += 1
            manifest = lease_manifest(path)
            if manifest is not None:
                roots.protected |= _manifest_closure(layout, manifest)
        else:
            held.release()
            roots.dead_leases.append(path)


def collect_roots(layout: Layout, progress: Progress | None = None, *, pool_grace_s: float | None = None) -> Roots:
    """The mark phase (reads only; writers hold the store lock to get a stable picture).

    Blobs a session linked into its daemon (the pool's use records younger than the pool
    grace) are protected like those of a running build: the session's images point at them.
    """
    from composecache.store.pool import POOL_GRACE_S
    from composecache.store.pool_maintenance import use_records

    roots = Roots()
    _staging_roots(layout, roots)
    _lease_roots(layout, roots)
    grace = POOL_GRACE_S if pool_grace_s is None else pool_grace_s
    roots.protected |= use_records(layout, time.time(), grace).blobs
    _scope_roots(layout, roots, progress)
    return roots


def reclaim_dead(roots: Roots) -> int:
    """Remove staging left by killed builds (never published) and stale leases; how many staging dirs."""
    reclaimed = 0
    for staging_dir, lock in roots.dead_staging:
        try:
            remove_tree(staging_dir)
            unlink_quietly(staging_dir.with_name(staging_dir.name + LOCK_SUFFIX))
            reclaimed += 1
        except OSError:
            continue
        finally:
            if lock is not None:
                lock.release()
    roots.dead_staging.clear()
    for lease in roots.dead_leases:
        try:
            unlink_quietly(lease)
        except OSError:
            continue
    return reclaimed
