"""`composecache <compose args>` against real sessions (issue 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import harness

DEFAULT_SERVICES = {"api", "worker", "web", "docs"}  # compose.yaml + compose.override.yaml, no profiles


def _env(cache_dir: Path, **extra: str) -> dict[str, str]:
    return {"COMPOSECACHE_DIR": str(cache_dir), "COMPOSECACHE_SCOPE_PREFIX": "", **extra}


def _cc(
    session: harness.Session, cache_dir: Path, cwd: Path, *args: str, check: bool = True, **extra: str
) -> harness.Result:
    return harness.composecache(session, *args, cwd=cwd, check=check, extra_env=_env(cache_dir, **extra))


def _start_in_background(session: harness.Session, cache_dir: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """composecache in its own process group (a test signals the group, like a terminal would)."""
    env = session.env()
    env.update(_env(cache_dir))
    return subprocess.Popen(
        [sys.executable, "-m", "composecache", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _running(session: harness.Session, project: str) -> set[str]:
    out = harness.docker(
        session,
        "ps",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--format",
        '{{.Label "com.docker.compose.service"}}',
    ).stdout
    return set(out.split())


def _built_services(log: str) -> set[str]:
    """Services whose summary line says they exported (composecache's one line per service)."""
    return {
        line.split("composecache: ", 1)[1].split(":", 1)[0]
        for line in log.splitlines()
        if line.startswith("composecache: ") and "; exported" in line
    }


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_new_session_up_build_is_fully_cached(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    a = sessions.start(leg)
    cold = _cc(a, cache_dir, project, "-p", "a", "--progress", "plain", "up", "--build", "-d")
    # Cold: every service's own steps run (a base stage shared by two services may run once, CACHED for the other).
    assert sum(not cached for cached in harness.run_steps(cold.output).values()) >= 4, cold.output
    assert _built_services(cold.output) == DEFAULT_SERVICES, cold.output
    assert _running(a, "a") == DEFAULT_SERVICES

    b = sessions.start(leg)
    warm = _cc(b, cache_dir, project, "-p", "b", "--progress", "plain", "up", "--build", "-d")
    harness.assert_all_run_steps_cached(warm.output, at_least=5)
    assert _running(b, "b") == DEFAULT_SERVICES
    assert "import from" in warm.stderr


def test_up_run_create_without_build_flag_use_the_cache(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    a = sessions.start()
    _cc(a, cache_dir, project, "-p", "a", "build")
    c = sessions.start()
    up = _cc(c, cache_dir, project, "-p", "c", "--progress", "plain", "up", "-d")
    harness.assert_all_run_steps_cached(up.output, at_least=5)
    assert _running(c, "c") == DEFAULT_SERVICES

    d = sessions.start()
    ran = _cc(
        d,
        cache_dir,
        project,
        "-p",
        "d",
        "--progress",
        "plain",
        "run",
        "--rm",
        "--no-deps",
        "web",
        "cat",
        "/site/index.txt",
    )
    harness.assert_all_run_steps_cached(ran.output, at_least=1)
    assert ran.stdout.splitlines()[-1] == "5000"
    created = _cc(d, cache_dir, project, "-p", "d2", "--progress", "plain", "create", "api")
    harness.assert_all_run_steps_cached(created.output, at_least=2)


def test_three_ways_of_naming_files_build_the_same_services(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    session = sessions.start()
    discovered = _cc(session, cache_dir, project / "nested" / "deeper", "-p", "one", "build")
    explicit = _cc(
        session,
        cache_dir,
        tmp_path,
        "-f",
        "stack/compose.yaml",
        "-f",
        "stack/compose.override.yaml",
        "-p",
        "two",
        "build",
    )
    variable = _cc(
        session, cache_dir, project, "-p", "three", "build", COMPOSE_FILE="compose.yaml:compose.override.yaml"
    )
    for result in (discovered, explicit, variable):
        assert _built_services(result.output) | _cached_services(result.output) == DEFAULT_SERVICES, result.output

    with_profile = _cc(session, cache_dir, project, "-p", "four", "--profile", "tools", "--profile", "legacy", "build")
    lines = _summary(with_profile.output)
    assert set(lines) == DEFAULT_SERVICES | {"tools"}, with_profile.output  # legacy opted out: no line
    assert "legacy" not in lines


def _summary(log: str) -> dict[str, str]:
    out = {}
    for line in log.splitlines():
        if line.startswith("composecache: ") and ": scope " in line:
            service, rest = line[len("composecache: ") :].split(":", 1)
            out[service] = rest
    return out


def _cached_services(log: str) -> set[str]:
    return {service for service, rest in _summary(log).items() if "import from" in rest}


def test_dry_run_keeps_own_cache_from_and_leaves_others_untouched(
    tmp_path: Path, rootfs_tar: Path, cache_dir: Path, sessions: harness.Sessions
) -> None:
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    (project / "compose.own.yaml").write_text(
        "services:\n  api:\n    build:\n      cache_from:\n        - type=local,src=/var/tmp/own-cache\n"
    )
    session = sessions.start()
    result = _cc(
        session,
        cache_dir,
        project,
        "--dry-run",
        "-f",
        "compose.yaml",
        "-f",
        "compose.own.yaml",
        "--profile",
        "legacy",
        "--profile",
        "sidecar",
        "build",
    )
    out = result.stdout
    assert "type=local,src=/var/tmp/own-cache" in out
    assert "b/services/legacy" not in out or "+    cache_to" not in out.split("b/services/legacy")[1].split("---")[0]
    assert "sidecar" not in out.split("# command:")[0]  # image-only: no build section, no diff
    assert "+  cache_to:" in out
    assert list(cache_dir.iterdir()) == [] or not any(cache_dir.rglob("index.json"))  # nothing written


def test_failing_dockerfile_keeps_compose_exit_code_and_publishes_what_built(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("broken", tmp_path / "broken", rootfs_tar)
    plain_session = sessions.start()
    plain = harness.docker(plain_session, "compose", "-p", "p", "build", cwd=project, check=False)
    session = sessions.start()
    wrapped = _cc(session, cache_dir, project, "-p", "w", "build", check=False)
    assert plain.returncode != 0
    assert wrapped.returncode == plain.returncode, wrapped.output
    assert "good" in _built_services(wrapped.output), wrapped.output

    fresh = sessions.start()
    again = _cc(fresh, cache_dir, project, "-p", "x", "--progress", "plain", "build", "good")
    harness.assert_all_run_steps_cached(again.output, at_least=1)


def test_classic_store_session_imports_and_says_it_cannot_export(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    a = sessions.start()
    _cc(a, cache_dir, project, "-p", "a", "build")
    classic = sessions.start(classic_store=True)
    result = _cc(classic, cache_dir, project, "-p", "b", "--progress", "plain", "build")
    harness.assert_all_run_steps_cached(result.output, at_least=5)
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, result.stderr


@pytest.mark.fail_open
def test_invalid_extension_is_one_warning_and_a_successful_build(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("badext", tmp_path / "badext", rootfs_tar)
    session = sessions.start()
    result = _cc(session, cache_dir, project, "-p", "e", "build")
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert "services.app.x-composecache.mode" in warnings[0] and "compose.yaml" in warnings[0]
    dry = _cc(session, cache_dir, project, "--dry-run", "build", check=False)
    assert dry.returncode == 1 and "error" in dry.stderr
    doctor = _cc(session, cache_dir, project, "doctor", check=False)
    assert doctor.returncode == 1
    assert "FIX" in doctor.stdout and "services.app.x-composecache.mode" in doctor.stdout, doctor.stdout


def test_attached_up_publishes_while_running_and_ctrl_c_exits_130(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    session = sessions.start()
    proc = _start_in_background(session, cache_dir, project, "-p", "i", "up", "--build", "web")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _running(session, "i") != {"web"}:
            time.sleep(0.5)
        assert _running(session, "i") == {"web"}
        # An attached `up` runs for as long as the user likes: the export is published while it runs.
        published: list[str] = []
        # Not a git checkout: the scope is the directory's name and a digest of where the build sits.
        while time.monotonic() < deadline and not any(name.startswith("stack-") and name.endswith("/web")
                                                      for name in published):  # fmt: skip
            stats = _cc(session, cache_dir, project, "cache", "stats", "--json")
            published = [scope["name"] for scope in json.loads(stats.stdout)["scopes"]]
            time.sleep(0.5)
        assert any(name.startswith("stack-") and name.endswith("/web") for name in published), published
        assert proc.poll() is None
        os.killpg(proc.pid, signal.SIGINT)  # like a terminal: the whole foreground group
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_bake_strategy_builds_with_set_and_compose_rebuilds_nothing(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    a = sessions.start(leg)
    _cc(a, cache_dir, project, "--strategy", "bake", "-p", "a", "up", "--build", "-d")
    assert _running(a, "a") == DEFAULT_SERVICES
    b = sessions.start(leg)
    warm = _cc(b, cache_dir, project, "--strategy", "bake", "-p", "b", "--progress", "plain", "up", "--build", "-d")
    harness.assert_all_run_steps_cached(warm.output, at_least=5)
    assert _running(b, "b") == DEFAULT_SERVICES
    # Everything after composecache's summary is compose's own run: no build step in it.
    compose_part = warm.stderr.rsplit("composecache: ", 1)[1].split("\n", 1)[1]
    assert "RUN " not in compose_part and "Building" not in compose_part, compose_part
    images = harness.docker(b, "images", "--format", "{{.Repository}}").stdout.split()
    assert {f"b-{service}" for service in DEFAULT_SERVICES} <= set(images)


def _published_digests(cache_dir: Path) -> set[str]:
    digests = set()
    for index in cache_dir.glob("ns/*/scopes/*/index.json"):
        try:
            digests |= {entry["digest"] for entry in json.loads(index.read_text())["manifests"]}
        except (OSError, ValueError, KeyError):
            continue
    return digests


def test_watch_rebuilds_are_published_while_watch_runs(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    project = harness.copy_fixture("watch", tmp_path / "watch", rootfs_tar)
    session = sessions.start()
    proc = _start_in_background(session, cache_dir, project, "-p", "w", "watch")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _published_digests(cache_dir):
            time.sleep(0.5)
        first = _published_digests(cache_dir)
        assert len(first) == 1, "the first build was not published while watch runs"
        time.sleep(2)  # let watch settle before the change
        (project / "src" / "app.txt").write_text("version 2\n")
        while time.monotonic() < deadline and _published_digests(cache_dir) == first:
            time.sleep(0.5)
        second = _published_digests(cache_dir)
        assert second and second != first, "the rebuild was not published"
        assert proc.poll() is None, "watch stopped"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
