"""gc: marking, sweeping with a grace period, LRU eviction to a size, prune."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from composecache.store import Store, scopes
from tests.unit.store_fakes import fake_export, publish_layers, write_blob

KB = 1024


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cache")


def _age_blobs(store: Store, seconds: float) -> None:
    old = time.time() - seconds
    for blob in store.layout.blob_dir.iterdir():
        os.utime(blob, (old, old), follow_symlinks=False)


def _set_last_used(store: Store, scope: str, when: float) -> None:
    record = store.layout.scope_dir(scope) / "scope.json"
    value = json.loads(record.read_text())
    record.write_text(json.dumps({**value, "last_used": when}))
    os.utime(record, (when, when))  # a use touches the record: its mtime counts too


def _blob_exists(store: Store, data: bytes) -> bool:
    return store.layout.blob(hashlib.sha256(data).hexdigest()).exists()


def test_referenced_blobs_are_marked_and_orphans_swept_after_the_grace_period(store: Store) -> None:
    publish_layers(store, "api", [b"kept layer"])
    write_blob(store.root, b"orphan")  # e.g. the remains of an export that was dropped
    _age_blobs(store, 7200)
    write_blob(store.root, b"young orphan")  # an export in flight wrote it a moment ago
    report = store.gc(grace_s=3600)
    assert report.blobs_removed == 1
    assert report.bytes_removed == len(b"orphan")
    assert not _blob_exists(store, b"orphan")
    assert _blob_exists(store, b"young orphan")
    assert _blob_exists(store, b"kept layer")
    assert store.gc(grace_s=0).blobs_removed == 1
    assert store.verify(deep=True).sound


def test_gc_frees_what_a_republished_scope_no_longer_uses(store: Store) -> None:
    publish_layers(store, "api", [b"shared", b"v1"])
    publish_layers(store, "api", [b"shared", b"v2"])
    stats = store.stats()
    assert stats.orphan_blobs == 3  # v1, its config, its manifest
    store.gc(grace_s=0)
    assert store.stats().orphan_bytes == 0
    assert _blob_exists(store, b"shared")
    assert not _blob_exists(store, b"v1")


def test_blobs_of_a_live_staging_index_are_kept(store: Store) -> None:
    staging = store.prepare_export("api")
    fake_export(staging, [b"exported, not yet published"])
    report = store.gc(grace_s=0)
    assert report.blobs_removed == 0
    assert report.staging_live == 1
    assert store.publish(staging).published


def test_blobs_a_live_export_wrote_before_its_index_exist_are_kept(store: Store) -> None:
    """BuildKit renames each blob into the store as it goes and writes index.json last."""
    publish_layers(store, "old", [b"old layer"])
    _age_blobs(store, 600)
    staging = store.prepare_export("api")
    write_blob(staging.path, b"written mid-export")  # no index.json yet
    report = store.gc(grace_s=0)
    assert report.blobs_removed == 0
    assert _blob_exists(store, b"written mid-export")
    store.discard(staging)  # the build died: nothing protects the blob any more
    assert store.gc(grace_s=0).blobs_removed == 1


def test_orphans_older_than_every_live_export_are_still_swept(store: Store) -> None:
    write_blob(store.root, b"old orphan")
    _age_blobs(store, 600)
    staging = store.prepare_export("api")
    assert store.gc(grace_s=0).blobs_removed == 1
    store.discard(staging)


def test_lru_eviction_keeps_recently_used_scopes_and_shared_blobs(store: Store) -> None:
    base = os.urandom(8 * KB)
    for name in ("old", "middle", "new"):
        publish_layers(store, name, [base, os.urandom(20 * KB)])
    now = time.time()
    _set_last_used(store, "old", now - 3000)
    _set_last_used(store, "middle", now - 2000)
    _set_last_used(store, "new", now - 1000)
    _age_blobs(store, 5000)
    total = store.stats().bytes
    report = store.gc(keep_storage=total - 10 * KB, grace_s=60)
    assert report.scopes_evicted == ["old"]
    assert report.fits
    assert store.scope_exists("middle")
    assert store.scope_exists("new")
    assert not store.scope_exists("old")
    assert _blob_exists(store, base)
    assert store.verify(deep=True).sound


def test_an_import_counts_as_use_for_lru(store: Store) -> None:
    for name in ("a", "b"):
        publish_layers(store, name, [os.urandom(10 * KB)])
    now = time.time()
    _set_last_used(store, "a", now - 3000)
    _set_last_used(store, "b", now - 2000)
    store.release_import(store.prepare_import("a"))  # "a" is now the most recent
    report = store.gc(keep_storage=store.stats().bytes - KB, grace_s=0)
    assert report.scopes_evicted == ["b"]


def test_scopes_used_within_the_grace_period_are_never_evicted(store: Store) -> None:
    publish_layers(store, "api", [os.urandom(10 * KB)])
    _age_blobs(store, 5000)
    report = store.gc(keep_storage=0, grace_s=3600)
    assert report.scopes_evicted == []
    assert not report.fits
    assert store.scope_exists("api")


def test_eviction_to_zero_empties_the_store(store: Store) -> None:
    for name in ("a", "b", "c"):
        publish_layers(store, name, [os.urandom(KB)])
    report = store.gc(keep_storage=0, grace_s=0)
    assert sorted(report.scopes_evicted) == ["a", "b", "c"]
    assert report.bytes_after == 0
    assert report.fits
    assert store.stats().blobs == 0


def test_gc_quarantines_broken_scopes_and_removes_empty_ones(store: Store) -> None:
    publish_layers(store, "broken", [b"x"])
    (store.layout.scope_dir("broken") / "index.json").write_text("nope")
    empty = store.layout.scope_dir("half-published")
    scopes.ensure_scope_dir(store.layout, empty)
    report = store.gc(grace_s=3600)
    assert report.scopes_quarantined == ["broken"]
    assert not empty.exists()
    assert len(scopes.quarantine_entries(store.layout)) == 1
    assert store.gc(grace_s=0).quarantine_removed == 1  # kept for inspection until the grace period ends


def test_prune_removes_a_scope_and_only_its_own_blobs(store: Store) -> None:
    shared = os.urandom(KB)
    publish_layers(store, "api", [shared, b"api only"])
    publish_layers(store, "web", [shared, b"web only"])
    report = store.prune("api")
    assert report.found
    assert report.blobs_removed == 3
    assert not store.scope_exists("api")
    assert store.scope_exists("web")
    assert _blob_exists(store, shared)
    assert not _blob_exists(store, b"api only")
    assert store.verify(deep=True).sound
    assert not store.prune("api").found


def test_prune_by_directory_name_for_unnamed_scopes(store: Store) -> None:
    publish_layers(store, "api", [b"x"])
    (store.layout.scope_dir("api") / "scope.json").unlink()
    assert store.prune(store.layout.scope_dir("api").name).found
