"""Seeding the daemon's content store: what is seeded, in which order, and that it fails open."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from composecache.output import Output
from composecache.session import seeding
from composecache.store import Store
from tests.unit.store_fakes import CACHECONFIG, publish_layers

MB = 1 << 20

FAKE_CTR = """#!{python}
import sys, json, os
log = os.environ["FAKE_CTR_LOG"]
args = sys.argv[1:]
verb = args[4:6]
data = b""
if verb == ["content", "ingest"]:
    data = sys.stdin.buffer.read()
with open(log, "a") as handle:
    handle.write(json.dumps({{"args": args, "stdin_bytes": len(data)}}) + "\\n")
fail = os.environ.get("FAKE_CTR_FAIL", "")
if fail and fail in " ".join(verb):
    sys.stderr.write("ctr: simulated failure\\n")
    sys.exit(1)
if verb == ["content", "ls"]:
    print("DIGEST\\tSIZE\\tAGE\\tLABELS")
"""


def fake_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> seeding.DaemonStore:
    """A daemon store whose `ctr` is FAKE_CTR (calls logged to tmp_path/ctr.log)."""
    ctr = tmp_path / "bin" / "ctr"
    ctr.parent.mkdir()
    ctr.write_text(FAKE_CTR.format(python=sys.executable))
    ctr.chmod(0o755)
    monkeypatch.setenv("FAKE_CTR_LOG", str(tmp_path / "ctr.log"))
    blobs = tmp_path / "data" / "containerd" / "daemon" / seeding.CONTENT_DIR / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    return seeding.DaemonStore(address=tmp_path / "containerd.sock", namespace="moby", ctr=ctr, content_blobs=blobs)


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> seeding.DaemonStore:
    return fake_daemon(tmp_path, monkeypatch)


def ctr_calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "ctr.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def verbs(calls: list[dict[str, Any]]) -> list[str]:
    return [" ".join(call["args"][4:6]) for call in calls]


def store_with_layers(tmp_path: Path, layers: list[bytes]) -> tuple[Store, str]:
    store = Store.open(tmp_path / "cache")
    manifest = publish_layers(store, "proj/api", layers)
    return store, manifest.digest


def test_blobs_to_seed_takes_big_layers_once_biggest_first(tmp_path: Path) -> None:
    small, big, bigger = os.urandom(1000), os.urandom(MB + 10), os.urandom(2 * MB)
    store, first = store_with_layers(tmp_path, [small, big, bigger])
    second = publish_layers(store, "proj/worker", [big]).digest
    found = seeding.blobs_to_seed(store.layout, [first, second])
    assert [d.size for d in found] == [2 * MB, MB + 10]
    assert all(d.media_type != CACHECONFIG for d in found)


def test_seed_pins_first_then_copies_and_registers(tmp_path: Path, daemon: seeding.DaemonStore) -> None:
    layers = [os.urandom(MB + 1), os.urandom(MB + 2)]
    store, manifest = store_with_layers(tmp_path, layers)
    seeder = seeding.Seeder(daemon, store.layout, os.environ)
    report = seeder.seed([manifest])
    assert (report.seeded, report.candidates, report.present, report.problems) == (2, 2, 0, [])
    for descriptor in seeding.blobs_to_seed(store.layout, [manifest]):
        copied = daemon.content_blobs / descriptor.hex  # type: ignore[operator]
        assert copied.stat().st_size == descriptor.size
        assert stat.S_IMODE(copied.stat().st_mode) == 0o444
    calls = ctr_calls(tmp_path)
    order = [v for v in verbs(calls) if v != "content ls"]
    assert order[:2] == ["content ingest", "content label"]  # the root is pinned before any blob lands
    label_args = next(c["args"] for c in calls if "label" in c["args"])
    assert any(str(a).startswith(seeding.ROOT_LABEL + "=") for a in label_args)
    refs = [a for a in label_args if str(a).startswith(seeding.REF_LABEL_PREFIX)]
    assert len(refs) == 2
    ingests = [c for c in calls if "--expected-size" in c["args"] and c["args"][6] != report.root]
    assert sorted(int(c["args"][c["args"].index("--expected-size") + 1]) for c in ingests)[-2:] == [MB + 1, MB + 2]
    assert not list(daemon.content_blobs.glob(".composecache-*"))  # type: ignore[union-attr]
    root = report.root
    seeder.release()
    assert ctr_calls(tmp_path)[-1]["args"][4:] == ["content", "rm", root]


def test_nothing_to_do_when_the_daemon_has_every_blob(tmp_path: Path, daemon: seeding.DaemonStore) -> None:
    store, manifest = store_with_layers(tmp_path, [os.urandom(MB + 1)])
    for descriptor in seeding.blobs_to_seed(store.layout, [manifest]):
        (daemon.content_blobs / descriptor.hex).write_bytes(b"x" * descriptor.size)  # type: ignore[operator]
    report = seeding.Seeder(daemon, store.layout, os.environ).seed([manifest])
    assert (report.seeded, report.present, report.root) == (0, 1, None)
    assert ctr_calls(tmp_path) == []  # not one ctr call: the same-session path pays nothing


def test_no_blob_is_copied_when_the_root_cannot_be_pinned(
    tmp_path: Path, daemon: seeding.DaemonStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CTR_FAIL", "content label")
    store, manifest = store_with_layers(tmp_path, [os.urandom(MB + 1)])
    report = seeding.Seeder(daemon, store.layout, os.environ).seed([manifest])
    assert report.seeded == 0 and report.root is None and report.problems
    assert list(daemon.content_blobs.iterdir()) == []  # type: ignore[union-attr]


def test_a_failing_ingest_is_a_warning_and_the_build_goes_on(
    tmp_path: Path, daemon: seeding.DaemonStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, manifest = store_with_layers(tmp_path, [os.urandom(MB + 1)])

    monkeypatch.setattr(seeding.Seeder, "_seed_one", lambda self, d: self.report.problems.append("boom") or False)
    seeder = seeding.seed_imports(store.layout, [manifest], daemon, os.environ, Output())
    assert seeder is not None
    assert "seeding: boom" in capsys.readouterr().err
    seeder.release()


def test_a_bug_in_seeding_fails_open_with_a_crash_log_and_strict_mode_raises_it(
    tmp_path: Path, daemon: seeding.DaemonStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, manifest = store_with_layers(tmp_path, [os.urandom(MB + 1)])
    monkeypatch.setenv("COMPOSECACHE_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("COMPOSECACHE_STRICT", raising=False)

    def bug(self: seeding.Seeder, manifests: list[str], skip: object = ()) -> seeding.SeedReport:
        raise KeyError("a bug")

    monkeypatch.setattr(seeding.Seeder, "seed", bug)
    assert seeding.seed_imports(store.layout, [manifest], daemon, os.environ, Output(verbose=1)) is None
    err = capsys.readouterr().err
    (log,) = (tmp_path / "logs").iterdir()
    assert "Traceback" in err  # -v: the traceback too
    assert err.splitlines()[-1] == (f"composecache: warning: internal error (KeyError('a bug')); seeding the daemon's "
                                    f"content store failed; importing the normal way; crash log: {log}")  # fmt: skip
    assert "KeyError: 'a bug'" in log.read_text()
    monkeypatch.setenv("COMPOSECACHE_STRICT", "1")
    with pytest.raises(KeyError):
        seeding.seed_imports(store.layout, [manifest], daemon, os.environ, Output())


def test_unavailable_daemon_means_the_normal_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, manifest = store_with_layers(tmp_path, [os.urandom(MB + 1)])
    assert seeding.seed_imports(store.layout, [manifest], "no containerd", {}, Output()) is None
    assert capsys.readouterr().err == ""  # only with -v
    assert seeding.seed_imports(store.layout, [], None, {}, Output()) is None


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("auto", True), ("1", True), ("0", False),
                                                  ("off", False), ("false", False)])  # fmt: skip
def test_enabled(value: str | None, expected: bool) -> None:
    assert seeding.enabled({} if value is None else {seeding.SEED_ENV: value}) is expected


def test_remote_docker_host_is_not_seeded(tmp_path: Path) -> None:
    with pytest.raises(seeding.SeedUnavailable, match="not a local socket"):
        seeding.locate({}, {"DOCKER_HOST": "tcp://10.0.0.1:2375", "PATH": "/bin"})


def test_seeding_off_or_no_docker_info_is_unavailable() -> None:
    with pytest.raises(seeding.SeedUnavailable, match="off"):
        seeding.locate({}, {seeding.SEED_ENV: "0"})
    with pytest.raises(seeding.SeedUnavailable, match="docker info failed"):
        seeding.locate(None, {"COMPOSECACHE_CTR": "/usr/bin/ctr"})


def test_store_from_info_needs_the_containerd_image_store(tmp_path: Path) -> None:
    info: dict[str, object] = {"DockerRootDir": str(tmp_path), "DriverStatus": [["Backing Filesystem", "extfs"]]}
    with pytest.raises(seeding.SeedUnavailable, match="containerd image store"):
        seeding._store_from_info(info, {}, Path("/usr/bin/ctr"))


def test_store_from_info_uses_the_address_docker_info_gives(tmp_path: Path) -> None:
    import socket

    sock_path = tmp_path / "c.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        daemon_root = tmp_path / "root" / "containerd" / "daemon"
        (daemon_root / "io.containerd.metadata.v1.bolt").mkdir(parents=True)  # a fresh daemon: no content dir yet
        blobs = daemon_root / seeding.CONTENT_DIR / "blobs" / "sha256"
        info = {"DockerRootDir": str(tmp_path / "root"),
                "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
                "Containerd": {"Address": str(sock_path), "Namespaces": {"Containers": "moby"}}}  # fmt: skip
        found = seeding._store_from_info(info, {}, Path("/usr/bin/ctr"))
        assert (found.address, found.namespace, found.content_blobs) == (sock_path, "moby", blobs)
    finally:
        server.close()


def test_find_managed_containerd_reads_the_config_dockerd_wrote(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    root = tmp_path / "data" / "containerd" / "daemon"
    root.mkdir(parents=True)
    config = tmp_path / "containerd.toml"
    config.write_text(f'root = "{root}"\n[grpc]\n  address = "/run/x/containerd.sock"\n')
    other = tmp_path / "other.toml"
    other.write_text('root = "/var/lib/containerd"\n[grpc]\n  address = "/run/containerd/containerd.sock"\n')
    for pid, cfg in (("100", other), ("200", config)):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(b"\0".join([b"containerd", b"--config", str(cfg).encode()]) + b"\0")
    (proc / "self").mkdir()
    assert seeding.find_managed_containerd(root, proc) == (Path("/run/x/containerd.sock"), root)
    assert seeding.find_managed_containerd(tmp_path / "elsewhere", proc) is None
