"""What the store holds: totals, per-scope sizes and last use, orphans, live builds, quarantine.

`bytes`/`blobs` count each blob file once; a scope's `bytes` counts every blob
it references (a layer shared by three scopes appears in all three), so the
scopes' bytes may add up to more than the store's.  Orphans are blobs no
scope references: exports in flight, or what the next gc removes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composecache.store import scopes
from composecache.store.layout import Layout
from composecache.store.pool_maintenance import PoolStats, pool_stats
from composecache.store.roots import Progress, blob_files, collect_roots
from composecache.store.scopes import QuarantineEntry


@dataclass(frozen=True)
class ScopeStats:
    name: str
    dirname: str
    bytes: int
    blobs: int
    last_used: float | None
    problem: str | None = None  # None when importable as far as a cheap look can tell


@dataclass
class StoreStats:
    root: Path
    cache_dir: Path
    namespace: str
    bytes: int = 0
    blobs: int = 0
    orphan_bytes: int = 0
    orphan_blobs: int = 0
    in_flight_bytes: int = 0  # orphans a live build's staging or import lease still uses
    staging_live: int = 0
    staging_dead: int = 0
    imports_live: int = 0
    scopes: list[ScopeStats] = field(default_factory=list)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    pool: PoolStats = field(default_factory=PoolStats)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "cache_dir": str(self.cache_dir),
            "namespace": self.namespace,
            "bytes": self.bytes,
            "blobs": self.blobs,
            "orphan_bytes": self.orphan_bytes,
            "orphan_blobs": self.orphan_blobs,
            "in_flight_bytes": self.in_flight_bytes,
            "staging": {"live": self.staging_live, "dead": self.staging_dead},
            "imports_live": self.imports_live,
            "pool": self.pool.to_json(),
            "scopes": [
                {
                    "name": scope.name,
                    "dir": scope.dirname,
                    "bytes": scope.bytes,
                    "blobs": scope.blobs,
                    "last_used": iso_time(scope.last_used),
                    "problem": scope.problem,
                }
                for scope in self.scopes
            ],
            "quarantined": [
                {"path": str(q.path), "name": q.name, "reason": q.reason, "since": iso_time(q.since)}
                for q in self.quarantine
            ],
        }


def iso_time(value: float | None) -> str | None:
    if value is None or value <= 0:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def store_stats(layout: Layout, progress: Progress | None = None) -> StoreStats:
    """A lock-free look (a concurrent publish or gc can make it a moment out of date)."""
    roots = collect_roots(layout, progress)
    roots.release()
    blobs = {blob.digest: blob.size for blob in blob_files(layout)}
    referenced = roots.referenced
    stats = StoreStats(layout.root, layout.base, layout.namespace)
    stats.bytes, stats.blobs = sum(blobs.values()), len(blobs)
    orphans = {digest: size for digest, size in blobs.items() if digest not in referenced}
    stats.orphan_bytes, stats.orphan_blobs = sum(orphans.values()), len(orphans)
    stats.in_flight_bytes = sum(size for digest, size in orphans.items() if digest in roots.protected)
    stats.staging_live, stats.staging_dead = roots.live_staging, len(roots.dead_staging)
    stats.imports_live = roots.live_leases
    for scope in roots.scope_refs:
        missing = sorted(d for d in scope.digests if d not in blobs)
        stats.scopes.append(
            ScopeStats(
                scope.name,
                scope.path.name,
                sum(blobs.get(d, 0) for d in scope.digests),
                len(scope.digests) - len(missing),
                scope.last_used or None,
                f"{scopes.MISSING} {missing[0]}" if missing else None,
            )
        )
    for scope_dir, problem in roots.broken:
        name = scopes.display_name(scope_dir)
        detail = f"{problem.kind} {problem.digest or problem.detail}"
        stats.scopes.append(ScopeStats(name, scope_dir.name, 0, 0, scopes.last_used(scope_dir) or None, detail))
    stats.scopes.sort(key=lambda s: (-(s.last_used or 0), s.name))
    stats.quarantine = scopes.quarantine_entries(layout)
    stats.pool = pool_stats(layout)
    return stats
