from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harness.make_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "rootfs.tar")


@pytest.fixture
def sessions() -> Iterator[harness.Sessions]:
    """Start sessions with sessions.start(leg=...); all are stopped after the test, pass or fail."""
    with harness.sessions(f"t{os.getpid() % 100000}x{next(_counter)}-") as group:
        yield group


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "shared-cache"
    path.mkdir()
    return path


def _count() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_counter = _count()
