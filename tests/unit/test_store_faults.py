"""Store fixes found by the fault suite (tests/e2e/test_faults.py), pinned without a daemon."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest

from composecache.cached_build import CachedBuild, CacheRequest
from composecache.output import Output
from composecache.settings import Settings
from composecache.store import Store, safefs, scopes
from tests.unit.store_fakes import fake_export, publish_layers


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cache")


def _blob(store: Store, data: bytes) -> Path:
    return store.layout.blob(hashlib.sha256(data).hexdigest())


def _truncate(path: Path) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:2])


def test_a_truncated_blob_is_quarantined_with_its_scope_on_import(store: Store) -> None:
    publish_layers(store, "api", [b"a layer of some size"])
    _truncate(_blob(store, b"a layer of some size"))
    assert store.prepare_import("api") is None
    assert not _blob(store, b"a layer of some size").exists(), "left in place, BuildKit would reuse it"
    # the next export writes the layer again (BuildKit skips only blobs that exist) and publishes
    publish_layers(store, "api", [b"a layer of some size"])
    assert store.prepare_import("api") is not None


def test_a_publish_naming_a_truncated_blob_is_dropped_and_the_blob_moved_away(store: Store) -> None:
    publish_layers(store, "web", [b"shared layer content"])
    _truncate(_blob(store, b"shared layer content"))
    staging = store.prepare_export("api")
    fake_export(staging, [b"shared layer content"])  # the exporter skips the blob: it exists
    outcome = store.publish(staging)
    assert not outcome.published and "dropped" in outcome.reason
    assert not _blob(store, b"shared layer content").exists()
    publish_layers(store, "api", [b"shared layer content"])  # healed by the next export


def test_verify_reports_a_truncated_blob_once_and_quarantines_it(store: Store) -> None:
    publish_layers(store, "api", [b"a layer of some size"])
    _truncate(_blob(store, b"a layer of some size"))
    report = store.verify(deep=True)
    assert [(p.scope, p.kind) for p in report.problems] == [("api", scopes.WRONG_SIZE)]
    assert len(report.quarantined) == 2  # the scope and the blob
    assert not _blob(store, b"a layer of some size").exists()
    assert store.verify(deep=True).sound


def _corrupt_same_size(path: Path) -> None:
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data.upper() if data.upper() != data else data.lower())


def test_recheck_import_finds_same_size_corruption_and_quarantines_it(store: Store) -> None:
    publish_layers(store, "api", [b"layer one", b"layer two"])
    spec = store.prepare_import("api")
    assert spec is not None
    assert store.recheck_import(spec) == []
    _corrupt_same_size(_blob(store, b"layer two"))
    assert store.recheck_import(spec) == ["sha256:" + hashlib.sha256(b"layer two").hexdigest()]
    assert not _blob(store, b"layer two").exists()
    assert not store.scope_exists("api")
    assert store.verify(deep=True).sound


def _cached_build(tmp_path: Path) -> tuple[CachedBuild, io.StringIO]:
    stream = io.StringIO()
    build = CachedBuild(Settings(cache_dir=tmp_path / "cache"), Output(stream=stream))
    build.prepare([CacheRequest("api", "api", ("api",))])
    return build, stream


def test_a_build_failed_by_a_corrupt_import_runs_again_without_it(tmp_path: Path) -> None:
    publish_layers(Store.open(tmp_path / "cache"), "api", [b"layer one"])
    build, stream = _cached_build(tmp_path)
    _corrupt_same_size(_blob(build.store, b"layer one"))  # type: ignore[arg-type]
    runs: list[list[str]] = []

    def run() -> int:
        runs.append(list(build.slots["api"].cache_from))
        return 17 if len(runs) == 1 else 0

    assert build.run_with_recovery(run) == 0
    assert len(runs) == 2 and runs[0] and runs[1] == []
    build.finish(summary=False)
    assert stream.getvalue().count("warning:") == 1 and "corrupt blob" in stream.getvalue()


@pytest.mark.parametrize("status", [1, 130])
def test_a_failed_build_with_sound_imports_or_an_interrupt_runs_once(tmp_path: Path, status: int) -> None:
    publish_layers(Store.open(tmp_path / "cache"), "api", [b"layer one"])
    build, stream = _cached_build(tmp_path)
    if status == 130:  # interrupted: never looked into, never run again, even with a corrupt import
        _corrupt_same_size(_blob(build.store, b"layer one"))  # type: ignore[arg-type]
    runs: list[int] = []

    def run() -> int:
        runs.append(1)
        return status

    assert build.run_with_recovery(run) == status
    assert runs == [1]
    build.finish(summary=False)
    assert "warning" not in stream.getvalue()


def test_gc_removes_the_temporary_index_of_a_killed_publish(store: Store) -> None:
    publish_layers(store, "api", [b"layer one"])
    scope_dir = store.layout.scope_dir("api")
    (scope_dir / ".index.json.0123456789ab.tmp").write_text("{}")
    (scope_dir / ".scope.json.ba9876543210.tmp").write_text("{}")
    store.gc(grace_s=3600)
    assert sorted(p.name for p in scope_dir.iterdir()) == ["blobs", "index.json", "oci-layout", "scope.json"]
    assert store.prepare_import("api") is not None


def _exporting_build(tmp_path: Path) -> tuple[CachedBuild, io.StringIO]:
    build, stream = _cached_build(tmp_path)
    assert build.slots["api"].staging is not None
    return build, stream


def test_an_export_that_did_not_complete_is_one_warning(tmp_path: Path) -> None:
    build, stream = _exporting_build(tmp_path)
    staging = build.slots["api"].staging
    assert staging is not None and not staging.export_incomplete()
    (staging.path / "ingest" / "0123").mkdir(parents=True)  # what a full disk leaves: a partial blob
    (staging.path / "ingest" / "0123" / "data").write_bytes(b"partial")
    assert staging.export_incomplete()
    build.finish()
    out = stream.getvalue()
    assert out.count("warning:") == 1 and "did not complete" in out
    assert "api: scope api: cold (nothing to import); not exported (export incomplete)" in out


def test_a_publish_the_store_refuses_is_one_warning(tmp_path: Path) -> None:
    build, stream = _exporting_build(tmp_path)
    staging = build.slots["api"].staging
    assert staging is not None
    fake_export(staging, [b"layer one"])
    assert build.store is not None
    os.rename(build.store.layout.locks, tmp_path / "locks-gone")  # the store vanished under the build
    build.finish()
    out = stream.getvalue()
    assert out.count("warning:") == 1 and "api: cache export not published" in out, out


def test_waiting_for_the_store_lock_is_information_not_a_warning(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "cache")
    build, stream = _cached_build(tmp_path)
    with store.locked():  # gc, say, holds it
        assert build.store is not None
        build.store.lock_timeout = 0.2
        build.prepare([CacheRequest("web", "web", ("api",))])
    out = stream.getvalue()
    assert "waiting for the cache store lock" in out and "warning: waiting" not in out, out


def test_a_world_writable_cache_directory_is_one_warning(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    os.chmod(tmp_path / "cache", 0o777)
    build, stream = _cached_build(tmp_path)
    build.finish(summary=False)
    assert stream.getvalue().count("warning:") == 1 and "world-writable" in stream.getvalue()
    os.chmod(tmp_path / "cache", 0o1777)  # sticky, like /tmp: entries cannot be replaced by others
    build, stream = _cached_build(tmp_path)
    build.finish(summary=False)
    assert "warning" not in stream.getvalue()


def test_a_symlink_planted_where_a_blob_belongs_is_quarantined_so_the_blob_can_be_written(
    store: Store, tmp_path: Path
) -> None:
    publish_layers(store, "api", [b"layer one"])
    victim = tmp_path / "victim"
    victim.write_text("not a blob")
    blob = _blob(store, b"layer one")
    blob.unlink()
    blob.symlink_to(victim)  # an exporter would take the blob for present and never write it
    assert store.prepare_import("api") is None
    assert not os.path.lexists(blob) and victim.read_text() == "not a blob"
    publish_layers(store, "api", [b"layer one"])
    assert store.prepare_import("api") is not None


def test_a_staging_directory_is_closed_to_other_users(store: Store) -> None:
    old = os.umask(0)  # BuildKit creates its ingest/ in staging with the build's umask
    try:
        staging = store.prepare_export("api")
        (staging.path / "ingest").mkdir()
    finally:
        os.umask(old)
    assert os.stat(staging.path).st_mode & 0o7777 == 0o2770
    store.discard(staging)


def test_a_store_lock_that_stays_held_is_waited_for_once_per_run(tmp_path: Path) -> None:
    """A suspended `cache gc` (Ctrl-Z) holds the lock: each build step used to wait the full timeout."""
    store = Store.open(tmp_path / "cache")
    for name in ("api", "web", "worker"):
        publish_layers(store, name, [name.encode() * 100])
    build = CachedBuild(Settings(cache_dir=tmp_path / "cache"), Output(stream=io.StringIO()))
    opened = build.open_store()
    assert opened is not None
    opened.lock_timeout = 0.5
    with store.locked():
        started = time.monotonic()
        slots = build.prepare([CacheRequest(n, n, (n,)) for n in ("api", "web", "worker")])
        build.finish(summary=False)
        elapsed = time.monotonic() - started
    assert all(slot.imported_from for slot in slots.values()), "imports go on without the lock"
    assert elapsed < 1.2, f"waited {elapsed:.1f}s: the timeout once, then no more waiting"


def test_remove_tree_removes_read_only_files_and_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "staging"
    (tree / "ingest" / "deep").mkdir(parents=True)
    for path in (tree / "index.json", tree / "ingest" / "deep" / "blob"):
        path.write_text("{}")
        path.chmod(0o444)  # as BuildKit writes them
    (tree / "blobs").symlink_to(outside)  # a link to a directory: removed, never entered
    (tree / "ingest" / "file-link").symlink_to(outside / "keep")
    safefs.remove_tree(tree)
    assert not tree.exists() and (outside / "keep").read_text() == "x"
    link = tmp_path / "link"
    link.symlink_to(outside)
    safefs.remove_tree(link)
    assert not link.exists() and outside.is_dir()
    safefs.remove_tree(tmp_path / "absent")  # nothing there: nothing to do
