"""Locks: the store lock (blocking, with a notice and a deadline), staging locks, import leases."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from composecache.store import Store
from composecache.store.locking import LockTimeout, acquire, create_and_lock, probe
from composecache.store.safefs import TEMP_NAME_RE
from tests.unit.store_fakes import HOLD_LOCK, fake_export, publish_layers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cache")


@pytest.fixture
def lock_holder(store: Store) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the store lock until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.layout.store_lock)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _let_go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_lock_tries_first_then_tells_the_waiter_once(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    told: list[str] = []
    with acquire(path, on_wait=told.append):
        assert probe(path) is None  # another open file description: excluded, even in one process
        with pytest.raises(LockTimeout):
            acquire(path, timeout=0.2, on_wait=told.append)
    assert len(told) == 1
    assert "waiting for the lock" in told[0]
    held = probe(path)
    assert held is not None
    held.release()


def test_lock_file_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("x")
    (tmp_path / "lock").symlink_to(tmp_path / "target")
    with pytest.raises(OSError, match="symlink"):
        acquire(tmp_path / "lock")


def test_lock_of_a_dead_process_is_free(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "lock")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    assert probe(tmp_path / "lock") is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert probe(tmp_path / "lock") is not None


def test_create_and_lock_never_reuses_a_file(tmp_path: Path) -> None:
    held = create_and_lock(tmp_path / "x.lock", b"owner")
    with pytest.raises(FileExistsError):
        create_and_lock(tmp_path / "x.lock")
    assert (tmp_path / "x.lock").read_bytes() == b"owner"
    assert held.still_at_path()
    held.release()


def test_publish_waits_for_the_store_lock_and_says_so(tmp_path: Path, lock_holder: subprocess.Popen[str]) -> None:
    notices: list[str] = []
    store = Store.open(tmp_path / "cache", on_notice=notices.append)
    staging = store.prepare_export("api")
    fake_export(staging, [b"x"])
    results = []
    worker = threading.Thread(target=lambda: results.append(store.publish(staging)))
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive(), "publish must wait for the lock"
    assert not results
    assert any("waiting for the cache store lock" in n for n in notices)
    _let_go(lock_holder)
    worker.join(10)
    assert results
    assert results[0].published


def test_publish_gives_up_after_the_deadline_without_raising(
    tmp_path: Path, lock_holder: subprocess.Popen[str]
) -> None:
    store = Store.open(tmp_path / "cache", lock_timeout=0.3)
    staging = store.prepare_export("api")
    fake_export(staging, [b"x"])
    outcome = store.publish(staging)
    assert not outcome.published
    assert "still locked" in outcome.reason
    assert not staging.path.exists()


def test_import_under_a_busy_lock_falls_back_to_an_unprotected_peek(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "cache", lock_timeout=0.3)
    publish_layers(store, "api", [b"x"])
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.layout.store_lock)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        spec = store.prepare_import("api")
        assert spec is not None
        assert spec.lease is None
    finally:
        proc.kill()
        proc.wait()


STAGING_OWNER = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from composecache.store import Store
from tests.unit.store_fakes import fake_export
store = Store.open(Path(sys.argv[1]))
staging = store.prepare_export("api")
fake_export(staging, [b"in-flight layer"])
print(staging.path, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def staging_owner(store: Store) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    proc = subprocess.Popen([sys.executable, "-c", STAGING_OWNER, str(store.base), str(REPO)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    path = Path(proc.stdout.readline().strip())
    yield proc, path
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_staging_of_a_live_build_is_never_touched(
    store: Store, staging_owner: tuple[subprocess.Popen[str], Path]
) -> None:
    _, path = staging_owner
    report = store.gc(keep_storage=0, grace_s=0)
    assert report.staging_live == 1
    assert report.staging_reclaimed == 0
    assert (path / "index.json").exists()
    assert report.blobs_removed == 0, "blobs named by a live staging index are kept"
    assert store.stats().staging_live == 1


def test_staging_of_a_killed_build_is_reclaimed_and_never_published(
    store: Store, staging_owner: tuple[subprocess.Popen[str], Path]
) -> None:
    proc, path = staging_owner
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.stats().staging_dead == 1
    report = store.gc(grace_s=0)
    assert report.staging_reclaimed == 1
    assert report.staging_live == 0
    assert not path.exists()
    assert not path.with_name(path.name + ".lock").exists()
    assert not store.scope_exists("api")
    assert report.blobs_removed == 3  # its layer, config and manifest: nothing references them
    assert store.stats().blobs == 0


def test_staging_created_while_gc_runs_is_never_reclaimed(store: Store) -> None:
    """Staging creation does not take the store lock: the lock file comes first and is re-checked."""
    stop = threading.Event()
    errors: list[str] = []

    def collect() -> None:
        while not stop.is_set():
            store.gc(grace_s=0)

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        for _ in range(150):
            staging = store.prepare_export("api")
            if not (staging.path / "blobs").is_symlink():
                errors.append(f"{staging.path} vanished while its build was alive")
            store.discard(staging)
    finally:
        stop.set()
        collector.join()
    assert not errors
    assert list(store.layout.staging.iterdir()) == []


def test_import_lease_keeps_blobs_through_republish_and_gc(store: Store) -> None:
    publish_layers(store, "api", [b"old layer"])
    spec = store.prepare_import("api")
    assert spec is not None
    publish_layers(store, "api", [b"new layer"])
    report = store.gc(grace_s=0)
    assert report.blobs_removed == 0
    assert report.leases_live == 1
    store.release_import(spec)
    report = store.gc(grace_s=0)
    assert report.blobs_removed == 3  # old layer, old config, old manifest


def test_lease_of_a_dead_process_is_cleaned_up(store: Store) -> None:
    publish_layers(store, "api", [b"x"])
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
            "from composecache.store import Store; Store.open(Path(sys.argv[1])).prepare_import('api')")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, str(store.base), str(REPO)], check=True)
    assert len(os.listdir(store.layout.leases)) == 1  # process exit released the lock, not the file
    assert store.gc(grace_s=0).leases_live == 0
    assert os.listdir(store.layout.leases) == []


def test_a_lock_at_its_name_is_never_free_while_its_owner_lives(store: Store) -> None:
    """A new staging or lease lock is locked before its name appears: a probe never wins it from a live owner."""
    publish_layers(store, "api", [b"x"])
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            staging = store.prepare_export("api")
            spec = store.prepare_import("api")
            store.release_import(spec)
            store.discard(staging)

    owner = threading.Thread(target=churn)
    owner.start()
    live_probes = 0
    stolen: list[str] = []
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(stolen) < 3:
            for directory, suffix in ((store.layout.staging, ".lock"), (store.layout.leases, ".lease")):
                for name in os.listdir(directory):
                    if not name.endswith(suffix):
                        continue
                    try:
                        held = probe(directory / name)
                    except FileNotFoundError:
                        continue  # its owner finished meanwhile
                    if held is None:
                        live_probes += 1
                    else:  # owners unlink the name before they let go: free at its name means unheld
                        if held.still_at_path():
                            stolen.append(name)
                        held.release()
    finally:
        stop.set()
        owner.join()
    assert stolen == []
    assert live_probes > 0, "the probes must have met live locks"
    assert os.listdir(store.layout.staging) == []
    assert os.listdir(store.layout.leases) == []


def test_create_and_lock_links_a_locked_file_and_leaves_no_temp_name(tmp_path: Path) -> None:
    held = create_and_lock(tmp_path / "x.lock", b"owner")
    assert os.listdir(tmp_path) == ["x.lock"]
    assert os.stat(tmp_path / "x.lock").st_nlink == 1
    assert probe(tmp_path / "x.lock") is None
    with pytest.raises(FileExistsError):
        create_and_lock(tmp_path / "x.lock", b"intruder")
    assert os.listdir(tmp_path) == ["x.lock"]
    assert (tmp_path / "x.lock").read_bytes() == b"owner"
    held.release()


def test_create_and_lock_without_hard_links_renames_and_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    held = create_and_lock(tmp_path / "x.lock", b"owner")
    assert os.listdir(tmp_path) == ["x.lock"]
    assert held.still_at_path()
    assert probe(tmp_path / "x.lock") is None
    with pytest.raises(FileExistsError):
        create_and_lock(tmp_path / "x.lock", b"intruder")
    assert os.listdir(tmp_path) == ["x.lock"]
    assert (tmp_path / "x.lock").read_bytes() == b"owner"
    held.release()


def test_a_temp_name_removed_before_its_link_makes_the_creator_pick_another_name(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a creator stalled past gc's grace period meets: its temp name is gone; it retries."""
    real_link = os.link
    removed: list[str] = []

    def gc_got_there_first(src: str | Path, dst: str | Path, **kwargs: bool) -> None:
        if not removed:
            removed.append(Path(src).name)
            os.unlink(src)
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", gc_got_there_first)
    staging = store.prepare_export("api")
    assert len(removed) == 1
    assert staging.lock.still_at_path()
    assert probe(staging.lock.path) is None
    assert sorted(os.listdir(store.layout.staging)) == sorted([staging.path.name, staging.lock.path.name])
    store.discard(staging)


KILLED_BEFORE_LINK = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from composecache.store import Store
store = Store.open(Path(sys.argv[1]))
os.link = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
store.prepare_export("api") if sys.argv[3] == "export" else store.prepare_import("api")
"""


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_process_killed_between_create_and_link_leaves_a_temp_that_gc_collects_after_grace(store: Store) -> None:
    publish_layers(store, "api", [b"x"])
    for what in ("export", "import"):
        proc = subprocess.run([sys.executable, "-c", KILLED_BEFORE_LINK, str(store.base), str(REPO), what], check=False)
        assert proc.returncode == -signal.SIGKILL
    temps = [*store.layout.staging.iterdir(), *store.layout.leases.iterdir()]
    assert len(temps) == 2
    assert all(TEMP_NAME_RE.match(t.name) for t in temps), temps
    # It breaks nobody: no staging or lease is counted, new ones work, the store is sound.
    stats = store.stats()
    assert (stats.staging_live, stats.staging_dead, stats.imports_live) == (0, 0, 0)
    staging = store.prepare_export("api")
    spec = store.prepare_import("api")
    assert spec is not None
    assert spec.lease is not None
    store.release_import(spec)
    store.discard(staging)
    assert store.verify(deep=True).sound
    # gc keeps them within the grace period, and keeps a young one even with grace 0 ...
    assert store.gc(grace_s=0).staging_reclaimed == 0
    assert all(t.exists() for t in temps)
    for temp in temps:
        _age(temp, 1800)
    store.gc(grace_s=3600)
    assert all(t.exists() for t in temps)
    # ... and removes them once older.
    for temp in temps:
        _age(temp, 7200)
    store.gc(grace_s=3600)
    assert os.listdir(store.layout.staging) == []
    assert os.listdir(store.layout.leases) == []
