"""The ground every other test stands on: real, isolated session daemons (issue 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sandboxlib  # scripts/ (on sys.path through tests/e2e/harness.py, which conftest.py imports first)

from tests.e2e import harness


def _build_and_run(session: harness.Session, context: Path, tag: str, *extra: str) -> harness.Result:
    build = harness.docker(
        session,
        "buildx",
        "build",
        "--progress",
        "plain",
        "--network",
        "none",
        "-t",
        tag,
        "--load",
        *extra,
        str(context),
    )
    ran = harness.docker(session, "run", "--rm", "--network", "none", tag)
    assert ran.stdout.strip() == "built"
    return build


def test_three_sessions_of_two_legs_run_side_by_side(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path
) -> None:
    context = harness.copy_fixture("hello", tmp_path / "ctx", rootfs_tar)
    started = [sessions.start("stable"), sessions.start("stable"), sessions.start("latest")]
    versions = {s.name: harness.docker(s, "version", "--format", "{{.Server.Version}}").stdout.strip() for s in started}
    assert versions[started[0].name] != versions[started[2].name], versions
    data_roots = set()
    for session in started:
        _build_and_run(session, context, "hello:test")
        info = json.loads(harness.docker(session, "info", "--format", "{{json .}}").stdout)
        data_roots.add(info["DockerRootDir"])
    assert len(data_roots) == 3, data_roots
    # Isolation: an image built in one session is not visible in another fresh one.
    fresh = sessions.start("stable")
    assert harness.docker(fresh, "image", "inspect", "hello:test", check=False).returncode != 0

    pids = [s.pid() for s in started]
    states = [s.state for s in started]
    sessions.stop_all()
    for pid, state in zip(pids, states, strict=True):
        assert pid is not None and not sandboxlib._alive(pid)
        assert not state.exists()
        assert sandboxlib._processes_under(state) == []
        assert sandboxlib._mounts_under(state) == []


def test_local_cache_exported_by_one_session_is_fully_cached_in_another(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path
) -> None:
    """The fact behind the project, by hand: no composecache logic involved."""
    context = harness.copy_fixture("hello", tmp_path / "ctx", rootfs_tar)
    cache = tmp_path / "cache"
    a, b = sessions.start(), sessions.start()
    cold = _build_and_run(a, context, "hello:a", "--cache-to", f"type=local,dest={cache},mode=max")
    assert not any(harness.run_steps(cold.output).values()), "session A must build cold"
    warm = _build_and_run(b, context, "hello:b", "--cache-from", f"type=local,src={cache}")
    harness.assert_all_run_steps_cached(warm.output, at_least=2)


def test_classic_store_session_cannot_export_a_local_cache(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path
) -> None:
    context = harness.copy_fixture("hello", tmp_path / "ctx", rootfs_tar)
    session = sessions.start(classic_store=True)
    result = harness.docker(
        session,
        "buildx",
        "build",
        "--progress",
        "plain",
        "--network",
        "none",
        "--cache-to",
        f"type=local,dest={tmp_path / 'cache'}",
        str(context),
        check=False,
    )
    assert result.returncode != 0
    assert "Cache export is not supported for the docker driver" in result.output
    assert not (tmp_path / "cache" / "index.json").exists()


def test_an_interrupted_start_leaves_no_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C (or a test's time-out) while a session is starting stops its dockerd and removes its state."""
    started: list[int] = []

    def interrupted(session: harness.Session) -> bool:
        started.extend(pid for pid in (session.pid(), sandboxlib._read_pid(session.state / "launcher.pid")) if pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(sandboxlib, "_docker_info_ok", interrupted)
    name = f"intr{os.getpid() % 100000}"
    with pytest.raises(KeyboardInterrupt):
        sandboxlib.start(name, leg="stable")
    assert started, "the daemon never got as far as being asked"
    assert not (sandboxlib.sandbox_root() / name).exists()
    assert not any(sandboxlib._alive(pid) for pid in started)
