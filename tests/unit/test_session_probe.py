"""The session's tool and daemon facts: asked once, remembered while nothing they depend on changes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from composecache.session import probe as session_probe
from composecache.session import seeding, toolchain
from composecache.session.memo import Memo


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A docker CLI, a compose plugin, a docker config and a daemon socket (nothing runs)."""
    bin_dir, config = tmp_path / "bin", tmp_path / "config"
    (config / "cli-plugins").mkdir(parents=True)
    bin_dir.mkdir()
    for path in (
        bin_dir / "docker",
        config / "cli-plugins" / "docker-compose",
        config / "cli-plugins" / "docker-buildx",
    ):
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    (config / "buildx").mkdir()
    (config / "buildx" / "current").write_text('{"Key":"x"}')
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "docker.sock"))
    try:
        yield {"PATH": str(bin_dir), "DOCKER_CONFIG": str(config), "DOCKER_HOST": f"unix://{tmp_path}/docker.sock",
               "HOME": str(tmp_path), "COMPOSECACHE_CTR": "/usr/bin/ctr"}  # fmt: skip
    finally:
        server.close()


def tools(version: str = "2.26.1", error: str | None = None) -> toolchain.Toolchain:
    return toolchain.Toolchain(docker=Path("/d"), compose=["/d", "compose"],
                               compose_version=toolchain.parse_version(version), compose_version_text=version,
                               builder=toolchain.Builder("docker", True, error), buildx_available=True,
                               daemon_info={"DriverStatus": []})  # fmt: skip


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def probe(env: object) -> toolchain.Toolchain:
        calls.append(1)
        return tools()

    monkeypatch.setattr(toolchain, "probe", probe)
    monkeypatch.setattr(seeding, "locate", lambda info, env: seeding.DaemonStore(
        Path("/run/c.sock"), "moby", Path("/usr/bin/ctr"), None))  # fmt: skip
    return calls


def test_asked_once_then_remembered(machine: dict[str, str], probes: list[int], tmp_path: Path) -> None:
    memo = Memo(tmp_path / "memo")
    first = session_probe.facts(machine, memo)
    second = session_probe.facts(machine, memo)
    assert probes == [1] and not first.remembered and second.remembered
    assert second.tools is not None and first.tools is not None
    assert (second.tools.compose_version, second.tools.builder, second.daemon) == (
        first.tools.compose_version, first.tools.builder, first.daemon)  # fmt: skip


def test_buildx_writing_its_default_selection_keeps_the_key(machine: dict[str, str]) -> None:
    current = Path(machine["DOCKER_CONFIG"]) / "buildx" / "current"
    current.unlink()  # a session's first build: buildx has not written the file yet
    before = session_probe.probe_key(machine)
    current.write_text('{"Key":"unix:///run/docker.sock","Name":"","Global":false}')
    assert session_probe.probe_key(machine) == before is not None
    current.write_text('{"Key":"unix:///run/docker.sock","Name":"builder-2","Global":false}')
    assert session_probe.probe_key(machine) != before


def test_a_restarted_daemon_is_a_new_key(machine: dict[str, str]) -> None:
    before = session_probe.probe_key(machine)
    sock = Path(machine["DOCKER_HOST"].removeprefix("unix://"))
    sock.unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    try:
        assert session_probe.probe_key(machine) not in {None, before}
    finally:
        server.close()


def test_an_upgraded_compose_is_a_new_key(machine: dict[str, str]) -> None:
    before = session_probe.probe_key(machine)
    (Path(machine["DOCKER_CONFIG"]) / "cli-plugins" / "docker-compose").write_text("#!/bin/sh\necho v2\n")
    assert session_probe.probe_key(machine) != before


@pytest.mark.parametrize(
    "change",
    [{"DOCKER_HOST": "tcp://10.0.0.1:2375"}, {"DOCKER_HOST": "", "DOCKER_CONTEXT": "remote"},
     {"DOCKER_HOST": "unix:///nonexistent.sock"}],
)  # fmt: skip
def test_daemons_it_cannot_fingerprint_are_asked_every_time(machine: dict[str, str], change: dict[str, str]) -> None:
    assert session_probe.probe_key({**machine, **change}) is None


def test_a_context_in_config_json_is_asked_every_time(machine: dict[str, str]) -> None:
    (Path(machine["DOCKER_CONFIG"]) / "config.json").write_text('{"currentContext": "remote"}')
    assert session_probe.probe_key({**machine, "DOCKER_HOST": ""}) is None


def test_incomplete_answers_are_not_remembered(
    machine: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = []

    def probe(env: object) -> toolchain.Toolchain:
        calls.append(1)
        return tools(error="Cannot connect to the Docker daemon")

    monkeypatch.setattr(toolchain, "probe", probe)
    memo = Memo(tmp_path / "memo")
    session_probe.facts(machine, memo)
    session_probe.facts(machine, memo)
    assert calls == [1, 1]


@pytest.mark.parametrize(
    "value",
    [None, {}, {"compose": "docker compose"},
     {"compose": ["/d"], "compose_version_text": "new", "containerd_store": 1, "driver": "docker", "daemon": "x",
      "docker": "/d", "buildx_available": 1}],
)  # fmt: skip
def test_odd_memo_values_are_misses(value: object) -> None:
    assert session_probe._from_json(value) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2.26.1-4", (2, 26, 1)), ("v2.40.3", (2, 40, 3)), ("Docker Compose version v2.4", (2, 4, 0)), ("none", None)],
)  # fmt: skip
def test_versions(text: str, expected: tuple[int, int, int] | None) -> None:
    assert toolchain.parse_version(text) == expected
    assert toolchain.Version("2.37.3") > toolchain.Version("2.37.0") > toolchain.Version("2.4")
    assert str(toolchain.Version("2.4")) == "2.4.0" and toolchain.Version("5.0.0").major == 5
    with pytest.raises(ValueError, match="not a version"):
        toolchain.Version("2.x")
