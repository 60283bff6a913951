"""`docker build` / `docker buildx build` through the docker shim, across sessions (issue 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.shims import notices, scenario_copy, shimmed

# One tag per scenario: re-tagging an image while a build unpacks layers it shares can race with the
# containerd image store's garbage collection (`failed to prepare extraction snapshot ... parent
# snapshot ... does not exist`, seen once here; upstream moby/buildkit#6521, containerd/containerd#10835).
BUILD_COMMANDS = {
    "docker-build": ["docker", "build", "--network", "none", "-t", "x", "."],
    "buildx-build": ["docker", "buildx", "build", "--network", "none", "-t", "y", "."],
    "image-build": ["docker", "image", "build", "--network", "none", "."],  # no -t: the Dockerfile is the scope
}


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_a_fresh_session_gets_every_run_step_from_the_cache(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    a = shimmed(sessions.start(leg), tmp_path, cache_dir)
    b = shimmed(sessions.start(leg), tmp_path, cache_dir)
    for scenario, argv in BUILD_COMMANDS.items():
        source_a = scenario_copy("hello", tmp_path / "a" / scenario, rootfs_tar, scenario)
        source_b = scenario_copy("hello", tmp_path / "b" / scenario, rootfs_tar, scenario)
        cold = a.run(*argv, cwd=source_a)
        assert not any(harness.run_steps(cold.output).values()), f"{scenario}: A must build cold\n{cold.output}"
        assert any("exported" in line for line in notices(cold.stderr)), cold.stderr
        warm = b.run(*argv, cwd=source_b)
        harness.assert_all_run_steps_cached(warm.output, at_least=3)
        assert any("import from" in line for line in notices(warm.stderr)), warm.stderr
    ran = b.run("docker", "run", "--rm", "--network", "none", "x")
    assert ran.stdout == "built\n"


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_legacy_builder_and_missing_buildx_build_as_before_with_one_notice(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    session = shimmed(sessions.start(leg), tmp_path, cache_dir)
    source = harness.copy_fixture("hello", tmp_path / "hello", rootfs_tar)
    legacy = session.run("docker", "build", "--network", "none", "-t", "legacy", ".", cwd=source, DOCKER_BUILDKIT="0")
    assert len(notices(legacy.stderr)) == 1, legacy.stderr
    assert "DOCKER_BUILDKIT=0" in notices(legacy.stderr)[0]
    # A docker configuration without the buildx plugin: the machine has no buildx.
    bare_config = tmp_path / "config-without-buildx"
    bare_config.mkdir()
    no_buildx = session.run("docker", "build", "--network", "none", "-t", "nobuildx", ".", cwd=source,
                            DOCKER_CONFIG=str(bare_config))  # fmt: skip
    assert len(notices(no_buildx.stderr)) == 1, no_buildx.stderr
    assert "buildx is not installed" in notices(no_buildx.stderr)[0]
    for tag in ("legacy", "nobuildx"):
        assert session.run("docker", "run", "--rm", "--network", "none", tag).stdout == "built\n"
    assert not any(cache_dir.glob("ns/*/scopes/*")), "nothing may be exported by the legacy builder"
