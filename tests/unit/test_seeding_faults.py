"""Seeding never puts a corrupt shared blob into the daemon (found by tests/e2e/test_faults.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composecache.session import seeding
from composecache.store import Store
from tests.unit.store_fakes import publish_layers
from tests.unit.test_seeding import MB, fake_daemon


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> seeding.DaemonStore:
    return fake_daemon(tmp_path, monkeypatch)


def test_a_corrupt_shared_blob_never_reaches_the_daemon_s_content_directory(
    tmp_path: Path, daemon: seeding.DaemonStore
) -> None:
    good, bad = os.urandom(MB + 1), os.urandom(MB + 2)
    store = Store.open(tmp_path / "cache")
    manifest = publish_layers(store, "proj/api", [good, bad]).digest
    corrupt = next(d for d in seeding.blobs_to_seed(store.layout, [manifest]) if d.size == MB + 2)
    path = store.layout.blob(corrupt.hex)
    os.chmod(path, 0o644)
    path.write_bytes(os.urandom(MB + 2))  # same size, other bytes: sizes cannot tell
    report = seeding.Seeder(daemon, store.layout, os.environ).seed([manifest])
    assert report.seeded == 1 and len(report.problems) == 1 and "does not match its digest" in report.problems[0]
    assert daemon.content_blobs is not None
    assert not (daemon.content_blobs / corrupt.hex).exists(), "containerd would take it on trust"
    assert len(list(daemon.content_blobs.iterdir())) == 1  # the good one
    assert not list(daemon.content_blobs.glob(".composecache-*"))
