"""The docker / docker-compose / compose-plugin shims against real sessions (issue 5)."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from composecache.shim import install as shim
from tests.e2e import harness
from tests.e2e.shims import ShimmedSession, notices, scenario_copy, shimmed
from tests.tree_snapshot import snapshot

COMPOSE_V1 = Path("/usr/bin/docker-compose")  # Debian bookworm's docker-compose 1.29.2


def _through_docker_shim(s: ShimmedSession, cwd: Path, *args: str) -> harness.Result:
    return s.run("docker", "compose", *args, cwd=cwd)


def _through_plugin_shim(s: ShimmedSession, cwd: Path, *args: str) -> harness.Result:
    return s.real_docker("compose", *args, cwd=cwd)


COMPOSE_SCENARIOS: dict[str, tuple[Callable[..., harness.Result], list[str]]] = {
    "shim-build": (_through_docker_shim, ["build"]),
    "shim-up": (_through_docker_shim, ["up", "--build", "-d"]),
    "plugin-build": (_through_plugin_shim, ["build"]),
    "plugin-up": (_through_plugin_shim, ["up", "--build", "-d"]),
}


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_compose_through_the_shims_is_fully_cached_in_a_fresh_session(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    a = shimmed(sessions.start(leg), tmp_path, cache_dir)
    b = shimmed(sessions.start(leg), tmp_path, cache_dir)
    for scenario, (run, args) in COMPOSE_SCENARIOS.items():
        source_a = scenario_copy("shimstack", tmp_path / "a" / scenario, rootfs_tar, scenario)
        source_b = scenario_copy("shimstack", tmp_path / "b" / scenario, rootfs_tar, scenario)
        cold = run(a, source_a, "-p", "sessiona", *args)
        assert not any(harness.run_steps(cold.output).values()), f"{scenario}: A must build cold\n{cold.output}"
        assert any("app: scope" in line and "exported" in line for line in notices(cold.stderr)), cold.stderr
        warm = run(b, source_b, "-p", "sessionb", *args)
        harness.assert_all_run_steps_cached(warm.output, at_least=3)
        assert any("import from" in line for line in notices(warm.stderr)), f"{scenario}:\n{warm.stderr}"


@pytest.mark.parametrize("leg", ["stable", "latest"])
@pytest.mark.fail_open  # Compose v1 cannot use the cache itself: one line, then its builds reach the docker shim
def test_compose_v1_builds_reach_the_cache_through_the_docker_shim(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    if not COMPOSE_V1.exists():
        harness.missing("Compose v1 is not installed", "apt-get install docker-compose (bookworm)")
    a = shimmed(sessions.start(leg), tmp_path, cache_dir)
    b = shimmed(sessions.start(leg), tmp_path, cache_dir)
    source_a = scenario_copy("shimstack", tmp_path / "a" / "v1", rootfs_tar, "compose-v1")
    source_b = scenario_copy("shimstack", tmp_path / "b" / "v1", rootfs_tar, "compose-v1")
    # Different projects, as sessions have: v1 tags `<project>_app`; the scope is the service.
    cold = a.run("docker-compose", "-p", "sessiona", "build", cwd=source_a)
    assert not any(harness.run_steps(cold.output).values()), cold.output
    assert any("scope v1/app" in line and "exported" in line for line in notices(cold.stderr)), cold.stderr
    warm = b.run("docker-compose", "-p", "sessionb", "build", cwd=source_b)
    harness.assert_all_run_steps_cached(warm.output, at_least=3)
    assert any("scope v1/app: import from v1/app" in line for line in notices(warm.stderr)), warm.stderr


def _non_build_commands(image: str) -> list[list[str]]:
    return [
        ["version", "--format", "{{.Client.Version}} {{.Server.Version}}"],
        ["--version"],
        ["ps", "-a", "--format", "{{.Names}} {{.Image}} {{.State}}"],
        ["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
        ["image", "inspect", "--format", "{{.Id}}", image],
        ["run", "--rm", "--network", "none", image, "echo", "hi"],
        ["info", "--format", "{{.Driver}} {{.Images}}"],
        ["buildx", "ls"],
        ["compose", "ps", "--format", "json"],
        ["compose", "config", "--services"],
        ["compose", "down"],
        ["compose", "--no-such-flag", "ps"],
        ["frobnicate"],
        ["ps", "--no-such-flag"],
        ["-H", "unix:///nonexistent/docker.sock", "ps"],
        ["build"],  # a build without a context: docker's own error, nothing from composecache
    ]


# compose's log lines carry the wall clock (logrus `time="..."`): two runs a second apart differ
# there whatever runs them. Only that field is masked; every other byte is compared.
LOG_TIME = re.compile(r'^time="[^"]*"', re.M)


def _outcome(result: harness.Result) -> tuple[int, str, str]:
    return result.returncode, result.stdout, LOG_TIME.sub('time="<clock>"', result.stderr)


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_non_build_commands_are_byte_identical_and_uninstall_restores_exactly(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    session = sessions.start(leg)
    project = harness.copy_fixture("shimstack", tmp_path / "project", rootfs_tar)
    harness.docker(session, "buildx", "build", "--network", "none", "-t", "img", "--load", str(project))
    harness.docker(session, "create", "--name", "parked", "--network", "none", "img")  # something for ps -a
    shim_dir = tmp_path / "shims"
    shim_dir.mkdir()
    s = ShimmedSession(session, shim_dir, cache_dir)
    before = snapshot(shim_dir, s.plugin_dir)

    installed = s.install()
    assert {c.action for c in installed} == {"installed"}
    states = {state.kind: state for state in shim.status(shim_dir, s.plugin_dir, s.env())}
    assert states["docker"].active
    assert states["plugin"].active
    after_install = snapshot(shim_dir, s.plugin_dir)
    assert {c.action for c in s.install()} == {"unchanged"}  # installing twice is harmless
    assert snapshot(shim_dir, s.plugin_dir) == after_install

    real = str(session.bin_dir / "docker")
    for args in _non_build_commands("img"):
        direct = harness.run([real, *args], s.env(), cwd=project, check=False)
        through = s.run("docker", *args, cwd=project, check=False)
        assert _outcome(through) == _outcome(direct), args
    # The compose plugin shim too, through the real docker CLI.
    for args in (["compose", "ps", "--format", "json"], ["compose", "version"], ["compose", "--no-such-flag"]):
        direct = harness.run([real, *args], s.env(COMPOSECACHE_DISABLE="1"), cwd=project, check=False)
        through = harness.run([real, *args], s.env(), cwd=project, check=False)
        assert _outcome(through) == _outcome(direct), args

    s.uninstall()
    assert snapshot(shim_dir, s.plugin_dir) == before


def test_shim_command_line_in_a_session(sessions: harness.Sessions, tmp_path: Path, cache_dir: Path) -> None:
    """`composecache shim install|status|uninstall` as an operator runs it (python -m composecache)."""
    session = sessions.start("stable")
    shim_dir = tmp_path / "bin"
    env_extra = {"PATH": f"{shim_dir}:{session.bin_dir}:/usr/local/bin:/usr/bin:/bin"}
    before = snapshot(session.docker_config)
    out = harness.composecache(session, "shim", "install", "--dir", str(shim_dir), extra_env=env_extra)
    assert "installed" in out.stdout
    status = harness.composecache(session, "shim", "status", "--dir", str(shim_dir), extra_env=env_extra)
    assert "(active)" in status.stdout
    assert sys.executable in (shim_dir / "docker").read_text()
    harness.composecache(session, "shim", "uninstall", "--dir", str(shim_dir), extra_env=env_extra)
    assert not shim_dir.exists()  # the install created it
    assert snapshot(session.docker_config) == before
    shutil.rmtree(tmp_path / "bin", ignore_errors=True)
