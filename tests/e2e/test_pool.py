"""The pool of unpacked layers (store/pool.py, session/pool.py) against real session daemons.

Session A builds a small stack cold.  A fresh session B builds it again: every RUN step is
CACHED and no layer is extracted (its chainID snapshots point into the pool), its containers
read every file, a write inside a container leaves the pool byte-identical, and gc with grace 0
while the container runs leaves it readable.  COMPOSECACHE_POOL=0 gives today's build
(extracting lines).  A damaged pool entry costs one line and is repaired from its blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.faultkit import read_only_bind

DOCKERFILE = """\
FROM scratch AS base
ADD rootfs.tar /
RUN mkdir -p /data/tree /gone && dd if=/dev/urandom of=/data/big.bin bs=1M count=6 2>/dev/null \\
 && for i in $(seq 1 150); do echo "file $i" > /data/tree/f$i; done \\
 && echo old > /gone/old && echo doomed > /data/doomed && ln /data/tree/f1 /data/hardlink

FROM base AS app
RUN rm -rf /gone /data/doomed && mkdir /gone && echo new > /gone/new && chmod 4755 /data/tree/f2
RUN sha256sum /data/big.bin /data/tree/f7 > /data/sums
CMD ["sleep", "3600"]

FROM base AS worker
RUN echo worker > /data/worker
CMD ["sleep", "3600"]
"""
COMPOSE = """\
services:
  app:
    build: {context: ., target: app, network: none}
    network_mode: none
    stop_signal: SIGKILL
  worker:
    build: {context: ., target: worker, network: none}
    network_mode: none
    stop_signal: SIGKILL
"""
EXTRACTING = re.compile(r"^#\d+ extracting sha256:[0-9a-f]{64}", re.M)
REGISTERED = re.compile(r"debug: pool: (\d+) of (\d+) layers registered")
CHECK_FILES = (
    "cat /data/tree/f150 /gone/new /data/worker 2>&1; ls /gone; test ! -e /gone/old && test ! -e /data/doomed"
    " && echo whiteouts-ok; sha256sum -c /data/sums && echo sums-ok"
)


@pytest.fixture
def project(tmp_path: Path, rootfs_tar: Path) -> Path:
    path = tmp_path / "poolproj"
    path.mkdir()
    (path / "Dockerfile").write_text(DOCKERFILE)
    (path / "compose.yaml").write_text(COMPOSE)
    (path / "rootfs.tar").write_bytes(rootfs_tar.read_bytes())
    return path


def _env(cache_dir: Path, **extra: str) -> dict[str, str]:
    return {"COMPOSECACHE_DIR": str(cache_dir), "COMPOSECACHE_SCOPE_PREFIX": "", "COMPOSECACHE_STRICT": "1",
            "NO_COLOR": "1", **extra}  # fmt: skip


def _up(session: harness.Session, cache_dir: Path, project: Path, name: str, **extra: str) -> harness.Result:
    return harness.composecache(session, "-v", "-p", name, "--progress", "plain", "up", "--build", "-d",
                                cwd=project, extra_env=_env(cache_dir, **extra))  # fmt: skip


def _cache(session: harness.Session, cache_dir: Path, *args: str, check: bool = True) -> harness.Result:
    return harness.composecache(session, "cache", *args, extra_env=_env(cache_dir), check=check)


def _read_files(session: harness.Session, name: str) -> str:
    out = harness.docker(session, "exec", f"{name}-app-1", "sh", "-c", CHECK_FILES).stdout
    worker = harness.docker(session, "exec", f"{name}-worker-1", "cat", "/data/worker", "/data/tree/f3").stdout
    return out + worker


def pool_root(cache_dir: Path) -> Path:
    (ns,) = (cache_dir / "ns").iterdir()
    return ns / "pool"


def pool_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry of the pool's trees: type, mode, owner, size, device, content hash, link target, xattrs."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root / "entries"):
        for name in [*dirs, *files]:
            path = Path(directory, name)
            info = os.lstat(path)
            key = str(path.relative_to(root))
            xattrs = tuple(sorted((a, os.getxattr(path, a, follow_symlinks=False))
                                  for a in os.listxattr(path, follow_symlinks=False)))  # fmt: skip
            common = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, xattrs)
            if stat.S_ISREG(info.st_mode):
                found[key] = (*common, info.st_size, info.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISLNK(info.st_mode):
                found[key] = (*common, os.readlink(path))
            else:
                found[key] = (*common, info.st_rdev, info.st_mtime_ns if stat.S_ISDIR(info.st_mode) else 0)
    return found


def _cold(sessions: harness.Sessions, leg: str, cache_dir: Path, project: Path) -> str:
    a = sessions.start(leg)
    _up(a, cache_dir, project, "a")
    return _read_files(a, "a")


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_a_fresh_session_registers_pooled_layers_instead_of_extracting(
    leg: str, sessions: harness.Sessions, cache_dir: Path, project: Path
) -> None:
    expected = _cold(sessions, leg, cache_dir, project)
    assert "whiteouts-ok" in expected and "sums-ok" in expected, expected

    b = sessions.start(leg)
    warm = _up(b, cache_dir, project, "b")
    harness.assert_all_run_steps_cached(warm.output, at_least=4)
    assert not EXTRACTING.findall(warm.output), warm.output
    registered = REGISTERED.search(warm.stderr)
    assert registered and int(registered.group(1)) >= 4, warm.stderr
    assert "warning" not in warm.stderr, warm.stderr
    assert _read_files(b, "b") == expected

    # A container writing over, beside and instead of files from pooled layers never changes the pool.
    before = pool_state(pool_root(cache_dir))
    assert before
    writes = (
        "echo poisoned > /data/tree/f1; echo more >> /data/big.bin; rm -rf /data/tree/f9 /gone;"
        " chmod 777 /data/tree/f3; echo x > /data/hardlink; mkdir -p /data/new && touch /data/new/x"
    )
    harness.docker(b, "exec", "b-app-1", "sh", "-c", writes)
    harness.docker(b, "exec", "b-worker-1", "sh", "-c", "rm -rf /data /bin/sh.not-there; echo w > /data.txt")
    assert pool_state(pool_root(cache_dir)) == before
    assert harness.docker(b, "exec", "b-app-1", "cat", "/data/tree/f1").stdout == "poisoned\n"  # its own upper layer
    assert _cache(b, cache_dir, "verify", "--deep").returncode == 0

    # Removing the images and pruning in B removes its snapshots' symlinks, never the pool.
    harness.docker(b, "compose", "-p", "b", "down", "--rmi", "all", cwd=project)
    harness.docker(b, "system", "prune", "-af")
    assert pool_state(pool_root(cache_dir)) == before
    snapshots = b.data_root / "containerd" / "daemon" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    assert not [p for p in snapshots.glob("*/fs") if p.is_symlink()], "a pruned session keeps no pool links"
    # ... and B builds again from the pool, as fresh as before.
    again = _up(b, cache_dir, project, "b")
    assert not EXTRACTING.findall(again.output), again.output
    assert _read_files(b, "b") == expected

    # COMPOSECACHE_POOL=0: the build is as before (BuildKit extracts every layer).
    c = sessions.start(leg)
    plain = _up(c, cache_dir, project, "c", COMPOSECACHE_POOL="0")
    harness.assert_all_run_steps_cached(plain.output, at_least=4)
    assert EXTRACTING.findall(plain.output), plain.output
    assert "layers registered" not in plain.stderr
    assert _read_files(c, "c") == expected


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_gc_with_grace_zero_while_a_container_runs_keeps_its_layers(
    leg: str, sessions: harness.Sessions, cache_dir: Path, project: Path
) -> None:
    expected = _cold(sessions, leg, cache_dir, project)
    b = sessions.start(leg)
    _up(b, cache_dir, project, "b")
    before = pool_state(pool_root(cache_dir))
    # Prune every scope, so no scope references the blobs any more; then gc with no grace at all.
    scopes = json.loads(_cache(b, cache_dir, "stats", "--json").stdout)["scopes"]
    for scope in scopes:
        _cache(b, cache_dir, "prune", scope["name"])
    gc = json.loads(_cache(b, cache_dir, "gc", "--grace", "0", "--json").stdout)
    assert gc["pool"]["entries_kept_in_use"] >= 4 and gc["pool"]["entries_removed"] == 0, gc
    assert pool_state(pool_root(cache_dir)) == before
    everything = "find / -xdev -type f -not -path '/proc/*' -not -path '/sys/*' -exec cat {} + | wc -c"
    assert int(harness.docker(b, "exec", "b-app-1", "sh", "-c", everything).stdout.split()[-1]) > 6 << 20
    assert _read_files(b, "b") == expected
    assert _cache(b, cache_dir, "verify", "--deep").returncode == 0
    # Once no session has used them within --pool-grace and no overlay mounts them, they go.
    harness.docker(b, "rm", "-f", "b-app-1", "b-worker-1")
    gc = json.loads(_cache(b, cache_dir, "gc", "--grace", "0", "--pool-grace", "0", "--json").stdout)
    assert gc["pool"]["entries_removed"] >= 4, gc
    assert not list((pool_root(cache_dir) / "entries").iterdir())


@pytest.mark.parametrize("leg", ["stable", "latest"])
@pytest.mark.parametrize("damage", ["corrupt", "partial", "planted symlink"])
def test_a_damaged_pool_entry_costs_one_line_and_is_repaired(
    sessions: harness.Sessions, cache_dir: Path, project: Path, tmp_path: Path, damage: str, leg: str
) -> None:
    expected = _cold(sessions, leg, cache_dir, project)
    b = sessions.start(leg)
    _up(b, cache_dir, project, "b")  # fills the pool
    entries = sorted((pool_root(cache_dir) / "entries").iterdir(), key=lambda p: -len(list(p.rglob("*"))))
    victim = entries[0]  # the layer with the most files (the base stage's)
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    (elsewhere / "planted").write_text("planted\n")
    if damage == "corrupt":
        (victim / "entry.json").write_text('{"format": "composecache-pool-entry", "version": 1}')
    elif damage == "partial":
        (victim / "entry.json").unlink()
    else:
        os.rename(victim / "tree", tmp_path / "moved-tree")
        (victim / "tree").symlink_to(elsewhere)
    c = sessions.start(leg)
    env = {k: v for k, v in _env(cache_dir).items() if k != "COMPOSECACHE_STRICT"}
    result = harness.composecache(c, "-v", "-p", "c", "--progress", "plain", "up", "--build", "-d", cwd=project,
                                  extra_env=env)  # fmt: skip
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "filled it again from its blob" in warnings[0], result.stderr
    assert not EXTRACTING.findall(result.output), result.output  # repaired before the build: nothing extracted
    assert _read_files(c, "c") == expected
    assert sorted(os.listdir(elsewhere)) == ["planted"]  # the planted target is never used nor touched
    assert (victim / "tree").is_dir() and not (victim / "tree").is_symlink()
    assert _cache(c, cache_dir, "verify", "--deep").returncode == 0


def test_a_read_only_consumer_imports_from_the_read_only_pool_and_never_fills(
    sessions: harness.Sessions, cache_dir: Path, project: Path
) -> None:
    expected = _cold(sessions, "stable", cache_dir, project)
    b = sessions.start("stable")
    _up(b, cache_dir, project, "b")  # a writer fills the pool
    before = pool_state(pool_root(cache_dir))
    with read_only_bind(cache_dir):
        c = sessions.start("stable")
        result = harness.composecache(c, "-v", "--read-only", "-p", "c", "--progress", "plain", "up", "--build",
                                      "-d", cwd=project, extra_env=_env(cache_dir))  # fmt: skip
        harness.assert_all_run_steps_cached(result.output, at_least=4)
        assert not EXTRACTING.findall(result.output), result.output
        assert _read_files(c, "c") == expected
        harness.docker(c, "rm", "-f", "c-app-1", "c-worker-1")
    assert pool_state(pool_root(cache_dir)) == before


def test_a_composecache_killed_while_filling_leaves_nothing_that_breaks_the_next_session(
    sessions: harness.Sessions, cache_dir: Path, tmp_path: Path, rootfs_tar: Path
) -> None:
    project = tmp_path / "bigproj"
    project.mkdir()
    (project / "Dockerfile").write_text("FROM scratch\nADD rootfs.tar /\n"
                                        "RUN dd if=/dev/urandom of=/big.bin bs=1M count=150 2>/dev/null\n"
                                        'RUN sha256sum /big.bin > /big.sha\nCMD ["sleep", "3600"]\n')  # fmt: skip
    (project / "compose.yaml").write_text(COMPOSE.split("  worker:", maxsplit=1)[0].replace("target: app, ", ""))
    (project / "rootfs.tar").write_bytes(rootfs_tar.read_bytes())
    a = sessions.start("stable")
    _up(a, cache_dir, project, "a")
    expected = harness.docker(a, "exec", "a-app-1", "cat", "/big.sha").stdout

    b = sessions.start("stable")
    env = {**b.env(), **_env(cache_dir), "BUILDKIT_PROGRESS": "plain"}
    proc = subprocess.Popen([sys.executable, "-m", "composecache", "-p", "b", "up", "--build", "-d"], cwd=project,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    staging = pool_root(cache_dir) / "staging"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if staging.is_dir() and any(staging.iterdir()):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "composecache finished before it could be killed mid-fill"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert any(staging.iterdir()), "the killed fill left its staging (gc reclaims it)"

    for session, name in ((b, "b"), (sessions.start("stable"), "c")):  # the same session again, and a fresh one
        result = _up(session, cache_dir, project, name)
        assert not EXTRACTING.findall(result.output), result.output
        assert "warning" not in result.stderr, result.stderr
        assert harness.docker(session, "exec", f"{name}-app-1", "cat", "/big.sha").stdout == expected
    gc = json.loads(_cache(b, cache_dir, "gc", "--json").stdout)
    assert gc["pool"]["staging_reclaimed"] >= 1, gc
    assert not list(staging.iterdir())
    assert _cache(b, cache_dir, "verify", "--deep").returncode == 0


def test_docker_build_registers_pooled_layers_too(sessions: harness.Sessions, cache_dir: Path, project: Path) -> None:
    build = ("-v", "docker", "build", "--progress", "plain", "--network", "none", "--target", "app", "-t", "poolimg",
             ".")  # fmt: skip
    a = sessions.start("stable")
    harness.composecache(a, *build, cwd=project, extra_env=_env(cache_dir))
    b = sessions.start("stable")
    warm = harness.composecache(b, *build, cwd=project, extra_env=_env(cache_dir))
    harness.assert_all_run_steps_cached(warm.output, at_least=3)
    assert not EXTRACTING.findall(warm.output), warm.output
    assert REGISTERED.search(warm.stderr), warm.stderr
    out = harness.docker(b, "run", "--rm", "--network", "none", "poolimg", "sh", "-c", "sha256sum -c /data/sums")
    assert out.stdout.count("OK") == 2, out.stdout
