from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.faultkit import Lab, leftovers_after, summary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def strict_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every e2e test runs composecache with COMPOSECACHE_STRICT=1 (a fallback or an internal error
    raises, so no test can pass on the fail-open path), unless it is marked `fail_open`: it tests
    that path itself.  Sessions and helpers build their environments from os.environ."""
    if request.node.get_closest_marker("fail_open") is None:
        monkeypatch.setenv("COMPOSECACHE_STRICT", "1")
    else:
        monkeypatch.delenv("COMPOSECACHE_STRICT", raising=False)


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


# Fault and attack suites (test_faults.py, test_security.py) share these.


def _module_prefix(request: pytest.FixtureRequest) -> str:
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    return f"{module[:2]}{os.getpid() % 100000}"


@pytest.fixture
def lab(tmp_path: Path, rootfs_tar: Path, cache_dir: Path) -> Iterator[Lab]:
    """A project copy, cache dir and private TMPDIR; afterwards nothing may be left behind."""
    lab = Lab(tmp_path, rootfs_tar, cache_dir)
    yield lab
    problems = leftovers_after(lab)
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, rootfs_tar: Path) -> Path:
    """A store holding one published scope (faultkit.SCOPE), built once per module; tests copy it."""
    base = tmp_path_factory.mktemp("template")
    maker = Lab(base, rootfs_tar, base / "cache")
    with harness.sessions(f"{_module_prefix(request)}tpl-") as group:
        result = maker.cc(group.start(), "-p", "tpl", "build", "app", check=True)
    assert summary(result)["app"].endswith("; exported"), result.stderr
    return maker.cache_dir


@pytest.fixture(scope="module")
def shared(request: pytest.FixtureRequest, rootfs_tar: Path) -> Iterator[harness.Session]:
    """One session for rows where a warm local build cache does not matter."""
    with harness.sessions(f"{_module_prefix(request)}sh-") as group:
        yield group.start("stable")
