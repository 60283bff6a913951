"""verify: is every scope importable, is every blob what its name says?

Checks, per scope: index.json parses, the manifest it names exists with the
right size and hash and parses, every blob the manifest names exists with the
right size.  `deep` also re-hashes every blob in the store (about 5 s per GB
here): a corrupt blob is worse than a missing one, because BuildKit skips
writing a blob that already exists, so no later export would ever heal it.

The walk takes no lock (a deep one may take minutes and must not stall
publishes).  Whatever looks wrong is looked at again under the store lock,
so a scope replaced or evicted during the walk is not blamed; what is still
wrong is then quarantined (when the store is writable): broken scopes and
corrupt blobs move to quarantine/, out of the way of builds.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from composecache.store import oci, scopes
from composecache.store.layout import Layout
from composecache.store.roots import Progress, blob_files


@dataclass(frozen=True)
class Problem:
    scope: str | None  # None: a blob no scope uses
    digest: str | None
    kind: str
    detail: str


@dataclass
class VerifyReport:
    deep: bool
    scopes_checked: int = 0
    blobs_checked: int = 0
    bytes_hashed: int = 0
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)
    pool_entries_checked: int = 0
    quarantine: list[scopes.QuarantineEntry] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        return not self.problems


@dataclass
class _Walk:
    refs: dict[Path, frozenset[str]] = field(default_factory=dict)
    broken: dict[Path, scopes.ScopeProblem] = field(default_factory=dict)
    bad_blobs: dict[str, scopes.ScopeProblem] = field(default_factory=dict)


def _check_scope(layout: Layout, scope_dir: Path, walk: _Walk) -> None:
    walk.broken.pop(scope_dir, None)
    walk.refs.pop(scope_dir, None)
    try:
        content = scopes.inspect_scope(layout, scope_dir)
    except scopes.ScopeProblem as problem:
        walk.broken[scope_dir] = problem
        return
    except OSError as exc:
        walk.broken[scope_dir] = scopes.ScopeProblem(scopes.BAD_INDEX, f"cannot read: {exc.strerror}")
        return
    if content is not None:
        walk.refs[scope_dir] = frozenset(d.digest for d in content.all_blobs)


def _check_blob(layout: Layout, hex_digest: str) -> tuple[scopes.ScopeProblem | None, int]:
    """Re-hash one blob: (problem or None, bytes hashed)."""
    path = layout.blob(hex_digest)
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return scopes.ScopeProblem(scopes.UNSAFE, "not a regular file", f"sha256:{hex_digest}"), 0
        actual = scopes.hash_file(path)
    except FileNotFoundError:
        return None, 0  # removed by gc meanwhile: nothing to blame
    except OSError as exc:
        return scopes.ScopeProblem(scopes.WRONG_DIGEST, f"unreadable: {exc.strerror}", f"sha256:{hex_digest}"), 0
    if actual != f"sha256:{hex_digest}":
        return scopes.ScopeProblem(
            scopes.WRONG_DIGEST, f"content hashes to {actual}", f"sha256:{hex_digest}"
        ), info.st_size
    return None, info.st_size


def _unsafe_blob_entries(layout: Layout) -> list[str]:
    """Entries in blobs/sha256 named like blobs that are not regular files (a planted symlink)."""
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(layout.blob_dir) as entries:
        for entry in entries:
            if oci.HEX_RE.match(entry.name) and not entry.is_file(follow_symlinks=False):
                found.append(entry.name)
    return found


def _walk(layout: Layout, deep: bool, report: VerifyReport, progress: Progress | None) -> _Walk:
    walk = _Walk()
    dirs = list(scopes.scope_dirs(layout))
    for done, scope_dir in enumerate(dirs, 1):
        _check_scope(layout, scope_dir, walk)
        if progress is not None:
            progress("checking scopes", done, len(dirs))
    report.scopes_checked = len(dirs)
    for hex_digest in _unsafe_blob_entries(layout):
        walk.bad_blobs[f"sha256:{hex_digest}"] = scopes.ScopeProblem(scopes.UNSAFE, "not a regular file")
    if deep:
        blobs = blob_files(layout)
        total = sum(blob.size for blob in blobs)
        for blob in blobs:
            problem, hashed = _check_blob(layout, blob.hex)
            report.bytes_hashed += hashed
            report.blobs_checked += 1
            if problem is not None:
                walk.bad_blobs[blob.digest] = problem
            if progress is not None:
                progress("hashing blobs", report.bytes_hashed, total)
    return walk


def _recheck(layout: Layout, walk: _Walk) -> None:
    """Look again at everything suspect (the walk raced with publishes and gc)."""
    for scope_dir in list(walk.broken):
        _check_scope(layout, scope_dir, walk)
    for digest in list(walk.bad_blobs):
        if walk.bad_blobs[digest].kind == scopes.WRONG_DIGEST:
            problem, _ = _check_blob(layout, digest.split(":", 1)[1])
            if problem is None:
                del walk.bad_blobs[digest]


def _blamed_blobs(walk: _Walk) -> set[str]:
    """Blobs a broken scope's problem names (a wrong size found by the scope check)."""
    return {p.digest for p in walk.broken.values() if p.digest and p.kind in {scopes.WRONG_SIZE, scopes.WRONG_DIGEST}}


def _problems(walk: _Walk) -> list[Problem]:
    problems = [
        Problem(scopes.display_name(scope_dir), problem.digest, problem.kind, problem.detail)
        for scope_dir, problem in sorted(walk.broken.items())
    ]
    blamed = _blamed_blobs(walk)
    for digest, problem in sorted(walk.bad_blobs.items()):
        users = [scope_dir for scope_dir, refs in sorted(walk.refs.items()) if digest in refs]
        if not users and digest not in blamed:  # a blob a broken scope names is reported with it
            problems.append(Problem(None, digest, problem.kind, f"{problem.detail} (no scope uses it)"))
        for scope_dir in users:
            problems.append(Problem(scopes.display_name(scope_dir), digest, problem.kind, problem.detail))
    return problems


def _quarantine(layout: Layout, walk: _Walk, report: VerifyReport) -> None:
    for digest, problem in walk.bad_blobs.items():
        with contextlib.suppress(OSError):
            report.quarantined.append(scopes.quarantine(layout, layout.blob(digest.split(":", 1)[1]), str(problem)))
    for problem in walk.broken.values():  # a wrong-size blob too: left in place, no export would rewrite it
        if problem.digest not in walk.bad_blobs:
            with contextlib.suppress(OSError):
                moved = scopes.quarantine_bad_blob(layout, problem)
                if moved is not None:
                    report.quarantined.append(moved)
    doomed = set(walk.broken) | {d for d, refs in walk.refs.items() if refs & set(walk.bad_blobs)}
    for scope_dir in sorted(doomed):
        reason = str(walk.broken.get(scope_dir) or "uses a corrupt blob")
        with contextlib.suppress(OSError):
            report.quarantined.append(scopes.quarantine(layout, scope_dir, reason, scopes.display_name(scope_dir)))


def verify_store(
    layout: Layout,
    *,
    deep: bool,
    locked: Callable[[], AbstractContextManager[object]] | None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check the store; `locked` (writable stores) enables re-checking under the lock and quarantine."""
    report = VerifyReport(deep=deep)
    walk = _walk(layout, deep, report, progress)
    if walk.broken or walk.bad_blobs:
        with locked() if locked is not None else contextlib.nullcontext():
            _recheck(layout, walk)
            report.problems = _problems(walk)
            if locked is not None:
                _quarantine(layout, walk, report)
    _verify_pool(layout, deep, locked, report)
    report.quarantine = scopes.quarantine_entries(layout)
    return report


def _verify_pool(
    layout: Layout, deep: bool, locked: Callable[[], AbstractContextManager[object]] | None, report: VerifyReport
) -> None:
    """The pool's entries (store/pool.py); deep: each tree compared with its blob.  Bad ones move aside."""
    from composecache.store.pool_maintenance import verify_pool

    with locked() if locked is not None else contextlib.nullcontext():
        issues, checked = verify_pool(layout, deep=deep, quarantine=locked is not None)
    report.pool_entries_checked = checked
    for issue in issues:
        report.problems.append(Problem(None, issue.chain_id, f"pool {issue.kind}", issue.detail))
