"""Imports pinned by digest, private staging exports, checked atomic publish, fail-open errors."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from composecache.errors import CacheUnavailable, UsageError
from composecache.store import Store, scopes
from tests.unit.store_fakes import fake_export, publish_layers


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cache")


def _scope_index(store: Store, scope: str) -> dict[str, object]:
    return json.loads((store.layout.scope_dir(scope) / "index.json").read_text())  # type: ignore[no-any-return]


def test_export_goes_to_private_locked_staging_linked_to_the_shared_blobs(store: Store) -> None:
    staging = store.prepare_export("api")
    assert staging.path.parent == store.root / "staging"
    assert os.readlink(staging.path / "blobs") == "../../blobs"
    assert staging.cache_to == f"type=local,dest={staging.path},mode=max,ignore-error=true"
    assert "reset" not in staging.cache_to
    other = store.prepare_export("api")
    assert other.path != staging.path
    assert not staging.has_new_export()
    store.discard(staging)
    store.discard(other)
    assert list((store.root / "staging").iterdir()) == []


def test_export_options_are_added_but_reserved_keys_are_refused(store: Store) -> None:
    notices: list[str] = []
    store = Store.open(store.base, on_notice=notices.append)
    staging = store.prepare_export("api", mode="min", options={"compression": "zstd", "reset": "true", "dest": "/x"})
    assert staging.cache_to.endswith(",mode=min,ignore-error=true,compression=zstd")
    assert "reset" not in staging.cache_to
    assert "/x" not in staging.cache_to
    assert len(notices) == 2
    store.discard(staging)
    with pytest.raises(UsageError, match="mode"):
        store.prepare_export("api", mode="maximum")


def test_describe_export_writes_nothing(store: Store) -> None:
    spec = store.describe_export("api", options={"compression": "zstd"})
    assert spec.startswith(f"type=local,dest={store.root}/staging/api-")
    assert spec.endswith(",mode=max,ignore-error=true,compression=zstd")
    assert list((store.root / "staging").iterdir()) == []


def test_paths_with_commas_are_quoted_for_buildx_csv(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "odd,dir")
    staging = store.prepare_export("api")
    assert staging.cache_to.startswith(f'"dest={staging.path}"'.replace('"dest', 'type=local,"dest'))
    fake_export(staging, [b"x"])
    store.publish(staging)
    spec = store.prepare_import("api")
    assert spec is not None
    assert f'"src={spec.path}"' in spec.cache_from


def test_publish_then_import_pins_the_manifest_digest(store: Store) -> None:
    assert store.prepare_import("api") is None
    assert not store.scope_exists("api")
    staging = store.prepare_export("api")
    manifest = fake_export(staging, [b"layer one", b"layer two"])
    assert staging.has_new_export()
    outcome = store.publish(staging)
    assert outcome.published
    assert outcome.digest == manifest.digest
    assert outcome.scope == "api"
    assert not staging.path.exists()
    assert not staging.lock.held
    assert store.scope_exists("api")
    index = _scope_index(store, "api")
    assert index["manifests"] == [
        {"mediaType": manifest.media_type, "digest": manifest.digest, "size": manifest.size,
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    ]  # fmt: skip
    spec = store.prepare_import("api")
    assert spec is not None
    scope_dir = store.layout.scope_dir("api")
    assert spec.cache_from == f"type=local,src={scope_dir},digest={manifest.digest}"
    assert os.readlink(scope_dir / "blobs") == "../../blobs"
    assert (scope_dir / "oci-layout").exists()
    assert spec.lease is not None
    assert spec.lease.exists()
    store.release_import(spec)
    assert not spec.lease.exists()


def test_image_manifest_exports_are_understood(store: Store) -> None:
    staging = store.prepare_export("api")
    manifest = fake_export(staging, [b"a", b"b"], image_manifest=True)
    assert store.publish(staging).published
    spec = store.prepare_import("api")
    assert spec is not None
    assert spec.digest == manifest.digest


def test_republish_replaces_the_single_latest_entry(store: Store) -> None:
    publish_layers(store, "api", [b"v1"])
    second = publish_layers(store, "api", [b"v2"])
    manifests = _scope_index(store, "api")["manifests"]
    assert isinstance(manifests, list)
    assert len(manifests) == 1
    assert manifests[0]["digest"] == second.digest


def test_a_warm_rebuild_publishing_the_same_manifest_writes_no_index_and_syncs_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = publish_layers(store, "api", [b"same"])
    index = store.layout.scope_dir("api") / "index.json"
    before = index.stat()
    syncs: list[int] = []
    monkeypatch.setattr(os, "fsync", syncs.append)
    again = publish_layers(store, "api", [b"same"])  # BuildKit exports the same manifest when all is cached
    assert again.digest == first.digest
    after = index.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert syncs == [], "the use record is not fsynced and the unchanged index is not rewritten"
    assert scopes.read_record(store.layout.scope_dir("api")).published is not None


def test_import_records_last_use(store: Store) -> None:
    publish_layers(store, "api", [b"x"])
    record = store.layout.scope_dir("api") / "scope.json"
    old = json.loads(record.read_text())
    record.write_text(json.dumps({**old, "last_used": 1000.0}))
    os.utime(record, (1000.0, 1000.0))
    store.release_import(store.prepare_import("api"))
    assert scopes.last_used(store.layout.scope_dir("api")) > 1000.0
    assert json.loads(record.read_text())["name"] == "api"
    store.peek_import("api")  # never writes
    assert scopes.read_record(store.layout.scope_dir("api")).name == "api"


def test_a_use_that_changes_nothing_else_touches_the_record_and_counts_for_lru(store: Store) -> None:
    publish_layers(store, "api", [b"x"])
    scope_dir = store.layout.scope_dir("api")
    record = scope_dir / "scope.json"
    first = scopes.read_record(scope_dir)
    assert first.last_used is not None and first.published is not None
    os.utime(record, (1000.0, 1000.0))
    old = json.loads(record.read_text())
    record.write_text(json.dumps({**old, "last_used": 1000.0}))
    os.utime(record, (1000.0, 1000.0))
    before = record.stat()
    store.release_import(store.prepare_import("api"))  # a rebuild: an import, then the same manifest
    publish_layers(store, "api", [b"x"])
    after = record.stat()
    assert after.st_ino == before.st_ino, "touched, not rewritten"
    assert scopes.read_record(scope_dir) == ("api", 1000.0, first.published), "the record's content is unchanged"
    assert scopes.last_used(scope_dir) > 1000.0, "the touch is the last use gc orders by"
    publish_layers(store, "api", [b"y"])  # a changed index is written
    assert scopes.read_record(scope_dir).published is not None
    assert record.stat().st_ino != before.st_ino


def test_a_record_without_a_last_use_is_written_not_touched(store: Store) -> None:
    publish_layers(store, "api", [b"x"])
    scope_dir = store.layout.scope_dir("api")
    (scope_dir / "scope.json").write_text(json.dumps({"name": "api"}))  # a record with no last use
    store.release_import(store.prepare_import("api"))
    assert scopes.read_record(scope_dir).last_used is not None, "a touch would leave last_used() at the index's mtime"


def test_a_planted_record_link_is_never_followed_when_touched(store: Store, tmp_path: Path) -> None:
    publish_layers(store, "api", [b"x"])
    record = store.layout.scope_dir("api") / "scope.json"
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"name": "api", "last_used": 1.0, "published": None}))
    os.utime(outside, (1000.0, 1000.0))
    record.unlink()
    record.symlink_to(outside)
    store.release_import(store.prepare_import("api"))
    assert outside.stat().st_mtime == 1000.0, "the target outside the store is untouched"
    assert json.loads(outside.read_text())["last_used"] == 1.0


def test_publish_drops_an_export_whose_blob_vanished(store: Store) -> None:
    """BuildKit skipped a blob that existed; gc removed it before publish: drop, never a broken index."""
    first = publish_layers(store, "api", [b"shared", b"v1"])
    staging = store.prepare_export("api")
    fake_export(staging, [b"shared", b"v2"])
    shared_hex = __import__("hashlib").sha256(b"shared").hexdigest()
    os.unlink(store.layout.blob(shared_hex))
    outcome = store.publish(staging)
    assert not outcome.published
    assert f"sha256:{shared_hex}" in outcome.reason
    assert _scope_index(store, "api")["manifests"][0]["digest"] == first.digest  # type: ignore[index]
    assert not staging.path.exists()


def test_publish_drops_a_blob_of_the_wrong_size(store: Store) -> None:
    staging = store.prepare_export("api")
    fake_export(staging, [b"twelve bytes"])
    victim = store.layout.blob(__import__("hashlib").sha256(b"twelve bytes").hexdigest())
    os.chmod(victim, 0o644)
    victim.write_bytes(b"short")
    outcome = store.publish(staging)
    assert not outcome.published
    assert "manifest says 12" in outcome.reason
    assert not store.scope_exists("api")


def test_publish_without_an_export_is_dropped_and_cleans_up(store: Store) -> None:
    staging = store.prepare_export("api")
    outcome = store.publish(staging)
    assert not outcome.published
    assert "no index.json" in outcome.reason
    assert not staging.path.exists()
    assert store.publish(staging).reason == "the staging directory was already released"


def test_publish_keep_leaves_staging_for_the_next_export(store: Store) -> None:
    staging = store.prepare_export("api")
    fake_export(staging, [b"v1"])
    assert store.publish(staging, keep=True).published
    assert staging.path.exists()
    assert staging.lock.held
    assert not staging.has_new_export()
    assert not store.publish(staging, keep=True).published  # nothing new
    second = fake_export(staging, [b"v2"])
    assert staging.has_new_export()
    assert store.publish(staging, keep=True).digest == second.digest
    store.discard(staging)
    assert not staging.path.exists()
    store.discard(staging)  # twice is fine


def test_publish_is_atomic_when_the_replace_fails(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    first = publish_layers(store, "api", [b"v1"])
    before = (store.layout.scope_dir("api") / "index.json").read_bytes()
    staging = store.prepare_export("api")
    fake_export(staging, [b"v2"])

    def crash(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", crash)
    outcome = store.publish(staging)
    monkeypatch.undo()
    assert not outcome.published
    assert "I/O error" in outcome.reason
    assert (store.layout.scope_dir("api") / "index.json").read_bytes() == before
    assert [p.name for p in store.layout.scope_dir("api").iterdir() if p.name.startswith(".")] == []
    assert store.prepare_import("api").digest == first.digest  # type: ignore[union-attr]


def test_full_disk_is_a_dropped_outcome_or_cache_unavailable(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = store.prepare_export("api")
    fake_export(staging, [b"v1"])

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)  # the os module safefs writes through
    outcome = store.publish(staging)
    assert not outcome.published
    assert "No space left" in outcome.reason
    monkeypatch.setattr(os, "mkdir", full)
    with pytest.raises(CacheUnavailable, match="No space left") as info:
        store.prepare_export("api")
    assert info.value.hint


def test_read_only_filesystem_during_publish_is_a_dropped_outcome(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = store.prepare_export("api")
    fake_export(staging, [b"v1"])

    def erofs(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "open", erofs)  # the os module safefs opens through
    outcome = store.publish(staging)
    monkeypatch.undo()
    assert not outcome.published
    assert "Read-only" in outcome.reason


def test_corrupt_scope_is_quarantined_and_not_imported(store: Store) -> None:
    notices: list[str] = []
    store = Store.open(store.base, on_notice=notices.append)
    publish_layers(store, "api", [b"x"])
    (store.layout.scope_dir("api") / "index.json").write_text("{broken")
    assert store.prepare_import("api") is None
    assert not store.layout.scope_dir("api").exists()
    entries = scopes.quarantine_entries(store.layout)
    assert len(entries) == 1
    assert entries[0].name == "api"
    assert "unparseable-index" in entries[0].reason
    assert (entries[0].path / "entry" / "index.json").read_text() == "{broken"
    assert any("corrupt" in n for n in notices)
    publish_layers(store, "api", [b"x"])  # the scope heals on the next export
    assert store.prepare_import("api") is not None


def test_scope_missing_a_layer_is_quarantined(store: Store) -> None:
    publish_layers(store, "api", [b"layer"])
    os.unlink(store.layout.blob(__import__("hashlib").sha256(b"layer").hexdigest()))
    assert store.peek_import("api") is None  # peek reports, never moves
    assert store.layout.scope_dir("api").exists()
    assert store.prepare_import("api") is None
    assert not store.layout.scope_dir("api").exists()


def test_planted_scope_symlink_is_never_followed(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store.layout.scope_dir("api").symlink_to(outside)
    assert store.prepare_import("api") is None
    assert not store.layout.scope_dir("api").is_symlink()
    store.layout.scope_dir("web").symlink_to(outside)
    publish_layers(store, "web", [b"x"])
    assert list(outside.iterdir()) == []
    assert not store.layout.scope_dir("web").is_symlink()
    assert store.scope_exists("web")


def test_planted_blobs_link_in_a_scope_is_refused(store: Store, tmp_path: Path) -> None:
    publish_layers(store, "api", [b"x"])
    link = store.layout.scope_dir("api") / "blobs"
    link.unlink()
    link.symlink_to(tmp_path)
    assert store.prepare_import("api") is None
    publish_layers(store, "api", [b"x"])
    assert os.readlink(store.layout.scope_dir("api") / "blobs") == "../../blobs"


def test_planted_index_symlink_is_not_read(store: Store, tmp_path: Path) -> None:
    publish_layers(store, "api", [b"x"])
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    index = store.layout.scope_dir("api") / "index.json"
    index.unlink()
    index.symlink_to(secret)
    assert store.prepare_import("api") is None
    assert secret.read_text() == "{}"


def test_namespaces_have_their_own_scopes_and_blobs(tmp_path: Path) -> None:
    a = Store.open(tmp_path / "cache", "team-a")
    b = Store.open(tmp_path / "cache", "team-b")
    publish_layers(a, "api", [b"a's layer"])
    assert b.prepare_import("api") is None
    assert b.stats().blobs == 0
    assert a.stats().blobs == 3
