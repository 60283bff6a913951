"""verify: each problem reported with its scope and digest, quarantined when writable."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from composecache.store import Store, scopes
from tests.unit.store_fakes import publish_layers, write_blob


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cache")


def _blob(store: Store, data: bytes) -> Path:
    return store.layout.blob(hashlib.sha256(data).hexdigest())


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _overwrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_sound_store_verifies(store: Store) -> None:
    publish_layers(store, "api", [b"a", b"b"])
    publish_layers(store, "web", [b"a", b"c"])
    report = store.verify(deep=True)
    assert report.sound
    assert report.scopes_checked == 2
    assert report.blobs_checked == 7


def test_unparseable_index_is_reported_and_quarantined(store: Store) -> None:
    publish_layers(store, "api", [b"a"])
    (store.layout.scope_dir("api") / "index.json").write_text("{")
    report = store.verify()
    assert [(p.scope, p.kind) for p in report.problems] == [("api", scopes.BAD_INDEX)]
    assert len(report.quarantined) == 1
    assert not store.layout.scope_dir("api").exists()
    assert store.verify().sound  # out of the way now; still listed as quarantined
    assert len(store.verify().quarantine) == 1
    assert store.stats().quarantine[0].name == "api"


def test_missing_layer_is_reported_with_scope_and_digest(store: Store) -> None:
    publish_layers(store, "api", [b"layer"])
    _blob(store, b"layer").unlink()
    report = store.verify()
    assert [(p.scope, p.digest, p.kind) for p in report.problems] == [("api", _digest(b"layer"), scopes.MISSING)]


def test_missing_manifest_is_reported(store: Store) -> None:
    manifest = publish_layers(store, "api", [b"layer"])
    store.layout.blob(manifest.hex).unlink()
    problem = store.verify().problems[0]
    assert (problem.scope, problem.digest, problem.kind) == ("api", manifest.digest, scopes.MISSING)


def test_wrong_size_is_reported(store: Store) -> None:
    publish_layers(store, "api", [b"layer"])
    _overwrite(_blob(store, b"layer"), b"longer layer")
    problem = store.verify().problems[0]
    assert (problem.scope, problem.digest, problem.kind) == ("api", _digest(b"layer"), scopes.WRONG_SIZE)


def test_same_size_corruption_needs_deep_and_quarantines_the_blob_too(store: Store) -> None:
    publish_layers(store, "api", [b"layer"])
    publish_layers(store, "web", [b"other"])
    _overwrite(_blob(store, b"layer"), b"LAYER")
    assert store.verify().sound  # sizes are right: only a re-hash can tell
    report = store.verify(deep=True)
    assert [(p.scope, p.digest, p.kind) for p in report.problems] == [("api", _digest(b"layer"), scopes.WRONG_DIGEST)]
    assert not _blob(store, b"layer").exists(), "a corrupt blob must go: BuildKit would never rewrite it"
    assert not store.layout.scope_dir("api").exists()
    assert store.scope_exists("web")
    assert store.verify(deep=True).sound


def test_corrupt_orphan_blob_is_reported_without_a_scope(store: Store) -> None:
    write_blob(store.root, b"orphan")
    _overwrite(_blob(store, b"orphan"), b"ORPHAN")
    problem = store.verify(deep=True).problems[0]
    assert problem.scope is None
    assert problem.digest == _digest(b"orphan")
    assert problem.kind == scopes.WRONG_DIGEST


def test_planted_symlink_among_blobs_is_reported(store: Store, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    fake = "0" * 64
    store.layout.blob(fake).symlink_to(tmp_path / "secret")
    report = store.verify()
    assert [(p.digest, p.kind) for p in report.problems] == [(f"sha256:{fake}", scopes.UNSAFE)]
    assert (tmp_path / "secret").read_text() == "x"
    assert not store.layout.blob(fake).is_symlink()


def test_read_only_verify_reports_but_moves_nothing(store: Store) -> None:
    publish_layers(store, "api", [b"layer"])
    _blob(store, b"layer").unlink()
    reader = Store.open(store.base, read_only=True)
    report = reader.verify()
    assert not report.sound
    assert report.quarantined == []
    assert store.layout.scope_dir("api").exists()
