"""Seeding the session daemon's content store (composecache/session/seeding.py) against real daemons.

With COMPOSECACHE_POOL=0: the layer pool links blobs itself; seeding is what remains without it.

A fresh session imports a cache whose layers composecache copied into its
daemon beforehand: every step is CACHED, no layer comes through the build
session, the image is the same, and nothing of composecache's stays pinned
in the daemon afterwards. With COMPOSECACHE_SEED=0 the same layer does come
through the session (so it was seeding that saved the transfer).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e import harness

DOCKERFILE = """\
FROM scratch
ADD rootfs.tar /
RUN dd if=/dev/urandom of=/big.bin bs=1M count=12 2>/dev/null
RUN sha256sum /big.bin > /big.sha
CMD ["sleep", "3600"]
"""
COMPOSE = """\
services:
  app:
    build: {context: ., network: none}
    network_mode: none
    stop_signal: SIGKILL
"""
# A layer of megabytes coming through the build session: "#12 sha256:<hex> 12.58MB / 12.58MB 0.3s done"
SESSION_TRANSFER = re.compile(r"^#\d+ sha256:[0-9a-f]{64} [\d.]+MB / [\d.]+MB", re.M)


def _project(tmp_path: Path, rootfs_tar: Path) -> Path:
    project = tmp_path / "seedproj"
    project.mkdir()
    (project / "Dockerfile").write_text(DOCKERFILE)
    (project / "compose.yaml").write_text(COMPOSE)
    (project / "rootfs.tar").write_bytes(rootfs_tar.read_bytes())
    return project


def _up(session: harness.Session, cache_dir: Path, project: Path, name: str, *own: str, **extra: str) -> harness.Result:
    # The layer pool links the blobs itself (tests/e2e/test_pool.py): these tests are about seeding alone,
    # the path the pool falls back to.
    env = {"COMPOSECACHE_DIR": str(cache_dir), "COMPOSECACHE_SCOPE_PREFIX": "", "COMPOSECACHE_POOL": "0", **extra}
    return harness.composecache(session, "-v", *own, "-p", name, "--progress", "plain", "up", "--build", "-d",
                                cwd=project, extra_env=env)  # fmt: skip


def _checksum(session: harness.Session, name: str) -> str:
    return harness.docker(session, "run", "--rm", "--network", "none", f"{name}-app", "cat", "/big.sha").stdout


def _pinned_by_composecache(session: harness.Session) -> list[str]:
    listed = harness.run([str(session.bin_dir / "ctr"), "-a", str(session.containerd_socket), "-n", "moby",
                          "content", "ls"], session.env())  # fmt: skip
    return [line for line in listed.stdout.splitlines() if "composecache" in line]


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_seeded_new_session_imports_without_the_build_session(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = _project(tmp_path, rootfs_tar)
    a = sessions.start(leg)
    _up(a, cache_dir, project, "a")
    expected = _checksum(a, "a")

    b = sessions.start(leg)
    seeded = _up(b, cache_dir, project, "b")
    harness.assert_all_run_steps_cached(seeded.output, at_least=2)
    assert re.search(r"debug: seeded [1-9]\d* of \d+ layer blobs", seeded.stderr), seeded.stderr
    assert "warning" not in seeded.stderr, seeded.stderr
    assert not SESSION_TRANSFER.search(seeded.output), seeded.output
    assert _checksum(b, "b") == expected
    assert _pinned_by_composecache(b) == []  # the seed root is gone once the build is done

    c = sessions.start(leg)
    plain = _up(c, cache_dir, project, "c", COMPOSECACHE_SEED="0")
    harness.assert_all_run_steps_cached(plain.output, at_least=2)
    assert "debug: seeded" not in plain.stderr
    assert SESSION_TRANSFER.search(plain.output), plain.output  # without seeding the layer streams through
    assert _checksum(c, "c") == expected


def test_docker_build_seeds_too(sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path) -> None:
    project = _project(tmp_path, rootfs_tar)
    env = {"COMPOSECACHE_DIR": str(cache_dir), "COMPOSECACHE_SCOPE_PREFIX": "", "COMPOSECACHE_POOL": "0"}
    build = ("-v", "docker", "build", "--progress", "plain", "--network", "none", "-t", "seedimg", ".")
    a = sessions.start("stable")
    harness.composecache(a, *build, cwd=project, extra_env=env)
    expected = harness.docker(a, "run", "--rm", "--network", "none", "seedimg", "cat", "/big.sha").stdout

    b = sessions.start("stable")
    seeded = harness.composecache(b, *build, cwd=project, extra_env=env)
    harness.assert_all_run_steps_cached(seeded.output, at_least=2)
    assert re.search(r"debug: seeded [1-9]\d* of \d+ layer blobs", seeded.stderr), seeded.stderr
    assert not SESSION_TRANSFER.search(seeded.output), seeded.output
    assert harness.docker(b, "run", "--rm", "--network", "none", "seedimg", "cat", "/big.sha").stdout == expected
    assert _pinned_by_composecache(b) == []


def test_bake_seeds_too(sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path) -> None:
    """`--strategy bake` goes through the same build lifecycle: the new session's daemon is seeded first."""
    project = _project(tmp_path, rootfs_tar)
    a = sessions.start("stable")
    _up(a, cache_dir, project, "a", "--strategy", "bake")
    expected = _checksum(a, "a")

    b = sessions.start("stable")
    seeded = _up(b, cache_dir, project, "b", "--strategy", "bake")
    harness.assert_all_run_steps_cached(seeded.output, at_least=2)
    assert re.search(r"debug: seeded [1-9]\d* of \d+ layer blobs", seeded.stderr), seeded.stderr
    assert "warning" not in seeded.stderr, seeded.stderr
    assert not SESSION_TRANSFER.search(seeded.output), seeded.output
    assert _checksum(b, "b") == expected
    assert _pinned_by_composecache(b) == []
