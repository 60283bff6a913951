"""What composecache's own commands do with the unpacked-layer pool: ls, stats, gc, verify, fill.

Beside store/pool.py (entries, filling, the use records sessions write) and kept
apart from it: a build imports pool.py on every run, and these parts (six
dataclasses and their helpers) are for `composecache cache` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composecache.store import oci
from composecache.store.layout import Layout
from composecache.store.locking import probe
from composecache.store.pool import (
    CORRUPT,
    MISSING,
    POOL_GRACE_S,
    TREE,
    UNSAFE,
    EntryInfo,
    FillRefused,
    PoolLayout,
    PoolProblem,
    check_entry,
    check_pool_dirs,
    fill_entry,
    layers_of_manifests,
    quarantine_entry,
    read_entry,
)
from composecache.store.safefs import read_small_file, remove_tree

STAGING_RE = re.compile(r"^([0-9a-f]{64})\.[0-9a-f]{8}$")
SESSION_RE = re.compile(r"^[0-9a-f]{24}\.json$")


@dataclass
class UseRecords:
    entries: set[str] = field(default_factory=set)  # chainIDs
    blobs: set[str] = field(default_factory=set)
    live: int = 0
    stale: list[Path] = field(default_factory=list)


def use_records(layout: Layout, now: float, grace_s: float) -> UseRecords:
    pool = PoolLayout(layout)
    found = UseRecords()
    try:
        names = [n for n in os.listdir(pool.uses) if SESSION_RE.match(n)]
    except OSError:
        return found
    for name in names:
        path = pool.uses / name
        try:
            if os.lstat(path).st_mtime < now - grace_s:
                found.stale.append(path)
                continue
            raw = json.loads(read_small_file(path, limit=8 << 20))
        except (OSError, ValueError):
            continue
        if not isinstance(raw, dict):
            continue
        found.live += 1
        found.entries |= {e for e in raw.get("entries", []) if isinstance(e, str)}
        found.blobs |= {b for b in raw.get("blobs", []) if isinstance(b, str)}
    return found


def mounted_lower_dirs(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    """Real paths of the lower directories of every overlay mounted where this process can see it."""
    found: set[str] = set()
    try:
        text = mountinfo.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        if " - overlay " not in line:
            continue
        options = line.rsplit(" ", 1)[-1]
        for option in options.split(","):
            if option.startswith("lowerdir="):
                for lower in option[len("lowerdir=") :].split(":"):
                    lower = lower.replace("\\040", " ")
                    if lower.startswith("/"):
                        with contextlib.suppress(OSError):
                            found.add(os.path.realpath(lower))
    return found


# --- listing, gc, verify ------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedEntry:
    hex: str
    info: EntryInfo | None
    problem: PoolProblem | None


def list_entries(layout: Layout) -> list[ListedEntry]:
    pool = PoolLayout(layout)
    try:
        check_pool_dirs(pool)
        names = sorted(os.listdir(pool.entries))
    except OSError:
        return []
    listed = []
    for name in names:
        if not oci.HEX_RE.match(name):
            listed.append(ListedEntry(name, None, PoolProblem(UNSAFE, "not named by a chainID")))
            continue
        try:
            listed.append(ListedEntry(name, read_entry(pool, name), None))
        except PoolProblem as exc:
            listed.append(ListedEntry(name, None, exc))
    return listed


@dataclass
class PoolStats:
    entries: int = 0
    bytes: int = 0
    files: int = 0
    broken: int = 0
    sessions: int = 0
    quarantined: int = 0

    def to_json(self) -> dict[str, int]:
        return {"entries": self.entries, "bytes": self.bytes, "files": self.files, "broken": self.broken,
                "sessions": self.sessions, "quarantined": self.quarantined}  # fmt: skip


def pool_stats(layout: Layout, now: float | None = None) -> PoolStats:
    stats = PoolStats()
    for listed in list_entries(layout):
        if listed.info is None:
            stats.broken += 1
            continue
        stats.entries += 1
        stats.bytes += listed.info.bytes
        stats.files += listed.info.members
    stats.sessions = use_records(layout, time.time() if now is None else now, POOL_GRACE_S).live
    with contextlib.suppress(OSError):
        stats.quarantined = sum(1 for n in os.listdir(PoolLayout(layout).quarantine) if not n.endswith(".reason"))
    return stats


@dataclass
class PoolGcReport:
    entries_removed: int = 0
    bytes_removed: int = 0
    entries_kept_in_use: int = 0
    staging_reclaimed: int = 0
    quarantine_removed: int = 0
    records_expired: int = 0


def _remove_via_trash(pool: PoolLayout, path: Path) -> bool:
    target = pool.trash / f"{path.name.split('.', 1)[0][:64]}.{os.urandom(4).hex()}"
    try:
        os.rename(path, target)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        remove_tree(target)
    return True


def collect_pool(layout: Layout, existing_blobs: set[str], *, now: float, pool_grace_s: float) -> PoolGcReport:
    """Remove entries no session may be using whose blob is gone; dead staging; old quarantine.

    The caller holds the store lock and has swept blobs already (with use records protecting
    the blobs sessions linked).  An entry is kept while its blob exists, while a session's
    use record younger than `pool_grace_s` names it, or while a mounted overlay uses it.
    """
    pool = PoolLayout(layout)
    report = PoolGcReport()
    try:
        check_pool_dirs(pool)
    except OSError:
        return report
    records = use_records(layout, now, pool_grace_s)
    mounted = mounted_lower_dirs()
    _collect_entries(layout, pool, existing_blobs, records, mounted, report)
    _collect_staging(pool, report)
    _collect_quarantine(pool, mounted, now - pool_grace_s, report)
    for name in _listdir(pool.trash):  # a gc killed while deleting
        with contextlib.suppress(OSError):
            remove_tree(pool.trash / name)
    for path in records.stale:
        with contextlib.suppress(OSError):
            os.unlink(path)
            report.records_expired += 1
    return report


def _collect_entries(layout: Layout, pool: PoolLayout, existing_blobs: set[str], records: UseRecords,
                     mounted: set[str], report: PoolGcReport) -> None:  # fmt: skip
    for listed in list_entries(layout):
        path = pool.entries / listed.hex
        if f"sha256:{listed.hex}" in records.entries or os.path.realpath(path / TREE) in mounted:
            report.entries_kept_in_use += 1
        elif listed.info is not None and listed.info.blob in existing_blobs:
            continue  # the unpacked form of a blob the store keeps
        elif _remove_via_trash(pool, path):
            report.entries_removed += 1
            report.bytes_removed += listed.info.bytes if listed.info is not None else 0


def _collect_staging(pool: PoolLayout, report: PoolGcReport) -> None:
    """Staging whose entry lock no one holds: left by a killed composecache."""
    for name in _listdir(pool.staging):
        match = STAGING_RE.match(name)
        if match is None:
            continue
        with contextlib.suppress(OSError):
            held = probe(pool.locks / f"{match.group(1)}.lock")
            if held is None:
                continue  # a fill in progress
            try:
                remove_tree(pool.staging / name)
                report.staging_reclaimed += 1
            finally:
                held.release()


def _collect_quarantine(pool: PoolLayout, mounted: set[str], cutoff: float, report: PoolGcReport) -> None:
    for name in _listdir(pool.quarantine):
        path = pool.quarantine / name
        with contextlib.suppress(OSError):
            if name.endswith(".reason"):
                if not os.path.lexists(path.with_suffix("")):
                    os.unlink(path)
                continue
            old = os.lstat(path).st_mtime < cutoff
            if old and os.path.realpath(path / TREE) not in mounted and _remove_via_trash(pool, path):
                report.quarantine_removed += 1


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


@dataclass(frozen=True)
class PoolIssue:
    chain_id: str
    kind: str
    detail: str


def verify_pool(layout: Layout, *, deep: bool, quarantine: bool) -> tuple[list[PoolIssue], int]:
    """Problems of the pool's entries (and how many entries were checked); deep compares trees to blobs."""
    from composecache.store.pool_verify import compare_tree

    pool = PoolLayout(layout)
    issues: list[PoolIssue] = []
    try:
        check_pool_dirs(pool)
    except FileNotFoundError:
        return issues, 0
    except OSError as exc:
        return [PoolIssue("-", UNSAFE, f"the pool directory {exc.filename}: {exc.strerror}")], 0
    listed = list_entries(layout)
    for entry in listed:
        problem = entry.problem
        if problem is None and deep and entry.info is not None:
            blob = layout.blob(entry.info.blob.split(":", 1)[1])
            if os.path.lexists(blob):
                mismatch = compare_tree(blob, pool.tree(entry.hex), entry.info)
                if mismatch is not None:
                    problem = PoolProblem(CORRUPT, mismatch)
        if problem is None:
            continue
        issues.append(PoolIssue(f"sha256:{entry.hex}", problem.kind, problem.detail))
        if quarantine:
            with contextlib.suppress(OSError, PoolProblem):
                quarantine_entry(pool, entry.hex, str(problem))
    return issues, len(listed)


# --- filling ahead of time (`composecache cache fill`) -----------------------------------------------


@dataclass
class FillReport:
    layers: int = 0
    present: int = 0
    filled: int = 0
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    refused: list[str] = field(default_factory=list)


def fill_scopes(layout: Layout, manifests: Sequence[str], on_wait: Any = None) -> FillReport:
    """Fill the pool with every layer chain of `manifests` (parents first); what could not be, and why."""
    started = time.monotonic()
    report = FillReport()
    layers = layers_of_manifests(layout, manifests)
    report.layers = len(layers)
    pool = PoolLayout(layout)
    failed: set[str] = set()
    for layer in layers:
        if layer.parent in failed:
            failed.add(layer.chain_id)
            continue
        try:
            check_pool_dirs(pool)
            check_entry(pool, layer)
            report.present += 1
            continue
        except PoolProblem as problem:
            if problem.kind != MISSING:
                quarantine_entry(pool, layer.hex, str(problem))
        except FileNotFoundError:
            pass
        try:
            info = fill_entry(layout, layer, on_wait=on_wait)
        except (FillRefused, OSError, PoolProblem) as exc:
            failed.add(layer.chain_id)
            report.refused.append(f"{layer.chain_id}: {exc}")
            continue
        report.filled += 1
        report.bytes += info.bytes
        report.files += info.members
    report.seconds = time.monotonic() - started
    return report
