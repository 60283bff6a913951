"""One scope on disk: reading and checking its index, its record, publishing into it, quarantine.

A scope directory is a complete OCI layout BuildKit can import from
(`cache_from type=local,src=<scope dir>,digest=...`):

    index.json            one entry tagged "latest" (replaced atomically on publish)
    oci-layout            {"imageLayoutVersion":"1.0.0"}
    blobs -> ../../blobs  relative, so it works wherever a session mounts the store
    scope.json            {"name": <exact scope name>, "last_used": <unix time>, ...}

The functions that change a scope or the quarantine run under the store lock
(the caller holds it); readers need no lock because every file is replaced
atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from composecache.store import oci
from composecache.store.layout import BLOBS_LINK, Layout
from composecache.store.naming import is_safe_dirname
from composecache.store.safefs import (
    FILE_MODE,
    atomic_write_bytes,
    atomic_write_json,
    check_dir,
    ensure_dir,
    ensure_relative_link,
    is_link_to,
    read_json,
    read_small_file,
)

INDEX = "index.json"
RECORD = "scope.json"

# Problem kinds reported by inspect/verify.
UNSAFE = "unsafe-entry"
BAD_INDEX = "unparseable-index"
BAD_MANIFEST = "unparseable-manifest"
MISSING = "missing-blob"
WRONG_SIZE = "wrong-size"
WRONG_DIGEST = "wrong-digest"


class ScopeProblem(Exception):
    """What is wrong with a scope: a kind (see above), the digest concerned and a detail."""

    def __init__(self, kind: str, detail: str, digest: str | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.digest = digest


class ScopeRecord(NamedTuple):
    name: str | None
    last_used: float | None
    published: float | None


class ScopeContent(NamedTuple):
    manifest: oci.Descriptor
    references: list[oci.Descriptor]

    @property
    def all_blobs(self) -> list[oci.Descriptor]:
        return [self.manifest, *self.references]


def scope_dirs(layout: Layout) -> Iterator[Path]:
    """Every entry of scopes/ that could be a scope (symlinks included, so they can be quarantined)."""
    try:
        entries = sorted(os.listdir(layout.scopes))
    except FileNotFoundError:
        return
    for entry in entries:
        if is_safe_dirname(entry):
            yield layout.scopes / entry


def read_record(scope_dir: Path) -> ScopeRecord:
    try:
        value: Any = read_json(scope_dir / RECORD, limit=1024 * 1024)
    except (OSError, ValueError):
        value = {}
    if not isinstance(value, dict):
        value = {}

    def number(key: str) -> float | None:
        item = value.get(key)
        return float(item) if isinstance(item, int | float) and not isinstance(item, bool) else None

    name = value.get("name")
    return ScopeRecord(name if isinstance(name, str) else None, number("last_used"), number("published"))


def last_used(scope_dir: Path) -> float:
    """For LRU: the later of the recorded last use and the record's mtime (write_record touches it
    for a use), else the index's mtime (a scope made by an older tool)."""
    record = read_record(scope_dir)
    if record.last_used is not None:
        with contextlib.suppress(OSError):
            return max(record.last_used, os.lstat(scope_dir / RECORD).st_mtime)
        return record.last_used
    try:
        return os.lstat(scope_dir / INDEX).st_mtime
    except OSError:
        return 0.0


def display_name(scope_dir: Path) -> str:
    return read_record(scope_dir).name or scope_dir.name


def blob_size(layout: Layout, digest: str) -> int | None:
    """The size of a blob in the shared store, None when missing (or not a regular file)."""
    try:
        info = os.lstat(layout.blob(digest.split(":", 1)[1]))
    except FileNotFoundError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def read_manifest(layout: Layout, manifest: oci.Descriptor) -> list[oci.Descriptor]:
    """Read and hash a cache manifest from the shared blobs; its references."""
    size = blob_size(layout, manifest.digest)
    if size is None:
        raise ScopeProblem(MISSING, "the cache manifest is missing", manifest.digest)
    if size != manifest.size:
        raise ScopeProblem(WRONG_SIZE, f"manifest is {size} bytes, index says {manifest.size}", manifest.digest)
    data = read_small_file(layout.blob(manifest.hex))
    if oci.sha256_digest(data) != manifest.digest:
        raise ScopeProblem(WRONG_DIGEST, "the manifest's content does not match its digest", manifest.digest)
    try:
        return oci.manifest_references(data)
    except oci.OciError as exc:
        raise ScopeProblem(BAD_MANIFEST, str(exc), manifest.digest) from exc


def check_blobs(layout: Layout, descriptors: list[oci.Descriptor]) -> None:
    for descriptor in descriptors:
        size = blob_size(layout, descriptor.digest)
        if size is None:
            raise ScopeProblem(MISSING, "blob is missing from the shared store", descriptor.digest)
        if size != descriptor.size:
            raise ScopeProblem(WRONG_SIZE, f"blob is {size} bytes, manifest says {descriptor.size}", descriptor.digest)


def inspect_scope(layout: Layout, scope_dir: Path, *, check_sizes: bool = True) -> ScopeContent | None:
    """The scope's manifest and blobs; None when it has no index yet; ScopeProblem when broken."""
    try:
        check_dir(scope_dir)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ScopeProblem(UNSAFE, f"{scope_dir.name} {exc.strerror}") from exc
    if not is_link_to(scope_dir / "blobs", BLOBS_LINK):
        raise ScopeProblem(UNSAFE, f"{scope_dir.name}/blobs is not a link to {BLOBS_LINK}")
    try:
        index = read_small_file(scope_dir / INDEX)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ScopeProblem(BAD_INDEX, f"cannot read index.json: {exc.strerror}") from exc
    try:
        manifest = oci.select_cache_manifest(index)
    except oci.OciError as exc:
        raise ScopeProblem(BAD_INDEX, str(exc)) from exc
    references = read_manifest(layout, manifest)
    if check_sizes:
        check_blobs(layout, references)
    return ScopeContent(manifest, references)


def ensure_scope_dir(layout: Layout, scope_dir: Path) -> None:
    """Create the scope directory and its fixed parts (under the store lock)."""
    ensure_dir(scope_dir)
    ensure_relative_link(scope_dir / "blobs", BLOBS_LINK)
    layout_file = scope_dir / "oci-layout"
    with contextlib.suppress(FileExistsError):
        fd = os.open(layout_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            os.write(fd, oci.OCI_LAYOUT)
        finally:
            os.close(fd)


def write_index(scope_dir: Path, manifest: oci.Descriptor) -> bool:
    """Point the scope at `manifest` (durably); False when it already did (a warm rebuild: no write)."""
    data = oci.scope_index_json(manifest)
    with contextlib.suppress(OSError):
        if read_small_file(scope_dir / INDEX) == data:
            return False
    atomic_write_bytes(scope_dir / INDEX, data)
    return True


def write_record(scope_dir: Path, name: str, *, published: bool, now: float | None = None) -> None:
    """The scope's last use (gc's LRU order) and, with `published`, when its index last changed.

    Not fsynced: a crash loses at most a recent use, and gc then goes by the index's mtime; two
    fsyncs per scope and build cost tens of ms (measured).  A use that changes nothing else only
    touches the record (its mtime is the last use: see last_used), one syscall where a rewrite
    costs ~1 ms per scope here."""
    old = read_record(scope_dir)
    if now is None and old.name == name and old.last_used is not None and not published:
        try:
            os.utime(scope_dir / RECORD, follow_symlinks=False)  # a planted link: its own times only
            return
        except OSError:
            pass  # not ours to touch (another user's record): rewrite it, as the directory allows
    now = time.time() if now is None else now
    atomic_write_json(
        scope_dir / RECORD,
        {"name": name, "last_used": now, "published": now if published else old.published},
        durable=False,
    )


def quarantine(layout: Layout, entry: Path, reason: str, name: str | None = None) -> Path:
    """Move a broken scope (or blob) out of the way, with a note saying why; returns where it went.

    os.rename moves a symlink itself, never what it points at.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = layout.quarantine / f"{stamp}-{entry.name[:72]}-{os.urandom(4).hex()}"
    ensure_dir(target)
    os.rename(entry, target / "entry")
    atomic_write_json(
        target / "reason.json",
        {"reason": reason, "name": name, "from": str(entry.relative_to(layout.root)), "time": time.time()},
    )
    return target


def quarantine_bad_blob(layout: Layout, problem: ScopeProblem) -> Path | None:
    """Move the blob a size, content or "missing" problem blames out of blobs/ (under the store lock).

    BuildKit skips writing a blob that already exists, so a wrong blob left in place would be
    named by every later export of the same layer, and every such publish dropped: that layer
    could never be cached again.  Once it is gone, the next export writes it afresh.
    """
    if problem.digest is None or problem.kind not in {WRONG_SIZE, WRONG_DIGEST, MISSING}:
        return None
    path = layout.blob(problem.digest.split(":", 1)[1])
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    # "missing" may be a planted symlink where the blob belongs: BuildKit follows it (the blob
    # "exists", it never writes the real one) while we refuse it, so it has to go as well.
    if problem.kind == MISSING and stat.S_ISREG(info.st_mode):
        return None
    return quarantine(layout, path, str(problem))


class QuarantineEntry(NamedTuple):
    path: Path
    reason: str
    name: str | None
    source: str | None
    since: float


def quarantine_entries(layout: Layout) -> list[QuarantineEntry]:
    found = []
    try:
        entries = sorted(os.listdir(layout.quarantine))
    except FileNotFoundError:
        return []
    for entry in entries:
        path = layout.quarantine / entry
        try:
            note: Any = read_json(path / "reason.json", limit=1024 * 1024)
            since = os.lstat(path).st_mtime
        except (OSError, ValueError):
            note, since = {}, 0.0
        note = note if isinstance(note, dict) else {}
        found.append(
            QuarantineEntry(
                path,
                str(note.get("reason", "unknown")),
                note.get("name") if isinstance(note.get("name"), str) else None,
                note.get("from") if isinstance(note.get("from"), str) else None,
                float(note["time"]) if isinstance(note.get("time"), int | float) else since,
            )
        )
    return found


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while True:
            data = os.read(fd, chunk)
            if not data:
                break
            digest.update(data)
    finally:
        os.close(fd)
    return "sha256:" + digest.hexdigest()
