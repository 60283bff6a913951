"""Store fixes found by the fault suite (tests/e2e/test_faults.py), pinned without a daemon."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from composecache.store import Store, scopes
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
