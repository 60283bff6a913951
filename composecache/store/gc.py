"""Mark-and-sweep garbage collection, LRU eviction to a size, and pruning one scope.

BuildKit never deletes anything from a local cache (moby/buildkit#1896), so
this is the only thing that bounds the store.  All of it runs under the store
lock, so no publish or import can interleave; builds themselves keep running
(the lock is never held for a build):

1. reclaim staging left by killed builds (lock free) and stale import leases,
   and the temp names of lock files whose creator was killed before linking;
2. mark: blobs named by every scope, by every live staging index and lease;
3. sweep: unmarked blobs older than the grace period and older than the
   oldest live export (a running export writes its blobs before its index
   exists; a publish that finds one gone is dropped, never half-applied);
4. evict whole scopes, least recently used first (imports count as use),
   never one used within the grace period, until the store fits; each
   eviction sweeps the blobs it leaves unreferenced.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from composecache.store import scopes
from composecache.store.layout import Layout
from composecache.store.naming import is_safe_dirname, safe_dirname
from composecache.store.pool import POOL_GRACE_S
from composecache.store.pool_maintenance import PoolGcReport, collect_pool
from composecache.store.roots import BlobFile, Progress, Roots, blob_files, collect_roots, reclaim_dead
from composecache.store.safefs import TEMP_NAME_RE, remove_tree

CLOCK_SLACK_S = 2.0  # blob mtimes and lock mtimes come from the same clock; allow coarse timestamps
# A new lock file's temp name lives for microseconds; one younger than this, even with grace 0,
# may be in use (removing it would only make its creator retry under another name).
LOCK_TEMP_MIN_AGE_S = 10.0


@dataclass
class GcReport:
    bytes_before: int = 0
    bytes_after: int = 0
    blobs_removed: int = 0
    bytes_removed: int = 0
    scopes_evicted: list[str] = field(default_factory=list)
    scopes_quarantined: list[str] = field(default_factory=list)
    staging_reclaimed: int = 0
    staging_live: int = 0
    leases_live: int = 0
    quarantine_removed: int = 0
    keep_storage: int | None = None
    grace_s: float = 0.0
    pool: PoolGcReport = field(default_factory=PoolGcReport)

    @property
    def fits(self) -> bool:
        return self.keep_storage is None or self.bytes_after <= self.keep_storage


@dataclass
class PruneReport:
    scope: str
    found: bool
    blobs_removed: int = 0
    bytes_removed: int = 0


class _Sweeper:
    """Deletes blobs and keeps the running totals."""

    def __init__(self, layout: Layout, blobs: list[BlobFile], report: GcReport) -> None:
        self.layout = layout
        self.blobs = {blob.digest: blob for blob in blobs}
        self.total = sum(blob.size for blob in blobs)
        self.report = report

    def remove(self, digest: str) -> None:
        blob = self.blobs.pop(digest, None)
        if blob is None:
            return
        try:
            os.unlink(self.layout.blob(blob.hex))
        except FileNotFoundError:
            pass
        except OSError:
            self.blobs[digest] = blob
            return
        self.total -= blob.size
        self.report.blobs_removed += 1
        self.report.bytes_removed += blob.size


def _tidy_scopes(layout: Layout, roots: Roots, report: GcReport) -> None:
    for scope_dir, problem in roots.broken:
        name = scopes.display_name(scope_dir)
        with contextlib.suppress(OSError):
            scopes.quarantine(layout, scope_dir, str(problem), name)
            report.scopes_quarantined.append(name)
    for scope_dir in roots.empty_scopes:  # a publish that died between mkdir and its index
        with contextlib.suppress(OSError):
            remove_tree(scope_dir)
    for scope_ref in roots.scope_refs:  # a publish killed between its temp file and the rename
        with contextlib.suppress(OSError):
            for entry in os.listdir(scope_ref.path):
                # Every write into a scope happens under the store lock, which gc holds: no live writer.
                if TEMP_NAME_RE.match(entry):
                    os.unlink(scope_ref.path / entry)


def _remove_lock_temps(layout: Layout, cutoff: float) -> None:
    """Temp names of lock files (locking.create_and_lock) left by a process killed before it linked one."""
    for directory in (layout.staging, layout.leases):
        try:
            entries = [e for e in os.listdir(directory) if TEMP_NAME_RE.match(e)]
        except OSError:
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                info = os.lstat(directory / entry)
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    os.unlink(directory / entry)


def _expire_quarantine(layout: Layout, cutoff: float, report: GcReport) -> None:
    for entry in scopes.quarantine_entries(layout):
        if entry.since < cutoff:
            with contextlib.suppress(OSError):
                remove_tree(entry.path)
                report.quarantine_removed += 1


def collect_garbage(
    layout: Layout,
    *,
    keep_storage: int | None,
    grace_s: float,
    progress: Progress | None = None,
    now: float | None = None,
    pool_grace_s: float = POOL_GRACE_S,
) -> GcReport:
    """gc proper; the caller holds the store lock.

    `grace_s` applies to blobs and scopes; pool trees and the blobs sessions linked follow
    `pool_grace_s` (a session may run containers on them: see store/pool.py).
    """
    now = time.time() if now is None else now
    cutoff = now - grace_s
    report = GcReport(keep_storage=keep_storage, grace_s=grace_s)
    roots = collect_roots(layout, progress, pool_grace_s=pool_grace_s)
    try:
        report.staging_reclaimed = reclaim_dead(roots)
    finally:
        roots.release()
    report.staging_live, report.leases_live = roots.live_staging, roots.live_leases
    _remove_lock_temps(layout, min(cutoff, now - LOCK_TEMP_MIN_AGE_S))
    _tidy_scopes(layout, roots, report)
    if roots.oldest_live_export is not None:  # a live export's blobs are not indexed yet
        blob_cutoff = min(cutoff, roots.oldest_live_export - CLOCK_SLACK_S)
    else:
        blob_cutoff = cutoff
    sweeper = _Sweeper(layout, blob_files(layout), report)
    report.bytes_before = sweeper.total
    kept = roots.kept
    candidates = [b for b in sweeper.blobs.values() if b.digest not in kept and b.mtime < blob_cutoff]
    for done, blob in enumerate(candidates, 1):
        sweeper.remove(blob.digest)
        if progress is not None:
            progress("sweeping blobs", done, len(candidates))
    if keep_storage is not None and sweeper.total > keep_storage:
        _evict_lru(roots, sweeper, keep_storage, cutoff, blob_cutoff)
    _expire_quarantine(layout, cutoff, report)
    report.bytes_after = sweeper.total
    report.pool = collect_pool(layout, set(sweeper.blobs), now=now, pool_grace_s=pool_grace_s)
    return report


def _evict_lru(roots: Roots, sweeper: _Sweeper, keep_storage: int, cutoff: float, blob_cutoff: float) -> None:
    refcount: Counter[str] = Counter()
    for scope in roots.scope_refs:
        refcount.update(scope.digests)
    evictable = sorted((s for s in roots.scope_refs if s.last_used < cutoff), key=lambda s: s.last_used)
    for scope in evictable:
        if sweeper.total <= keep_storage:
            break
        try:
            remove_tree(scope.path)
        except OSError:
            continue
        sweeper.report.scopes_evicted.append(scope.name)
        for digest in scope.digests:
            refcount[digest] -= 1
            blob = sweeper.blobs.get(digest)
            if (
                refcount[digest] <= 0
                and digest not in roots.protected
                and blob is not None
                and blob.mtime < blob_cutoff
            ):
                sweeper.remove(digest)


def find_scope_dir(layout: Layout, scope: str) -> tuple[str, Path | None]:
    """A scope by its exact name, or by its directory name as `ls` shows for unnamed scopes."""
    candidates = [layout.scopes / safe_dirname(scope)]
    if is_safe_dirname(scope):
        candidates.append(layout.scopes / scope)
    for path in candidates:
        if os.path.lexists(path):
            return scopes.display_name(path), path
    return scope, None


def prune_scope(layout: Layout, scope: str) -> PruneReport:
    """Remove one scope and the blobs only it used (the caller holds the store lock)."""
    name, path = find_scope_dir(layout, scope)
    report = PruneReport(name, found=path is not None)
    if path is None:
        return report
    roots = collect_roots(layout)
    roots.release()
    own = next((s.digests for s in roots.scope_refs if s.path == path), frozenset())
    others = {d for s in roots.scope_refs if s.path != path for d in s.digests} | roots.protected
    remove_tree(path)
    for blob in blob_files(layout):
        if blob.digest in own and blob.digest not in others:
            try:
                os.unlink(layout.blob(blob.hex))
            except OSError:
                continue
            report.blobs_removed += 1
            report.bytes_removed += blob.size
    return report
