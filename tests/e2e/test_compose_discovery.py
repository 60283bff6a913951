"""The project compose builds, its services, its scopes: against real sessions (strict mode unless marked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import harness

PLAIN = ("--progress", "plain")


def _env(cache_dir: Path, **extra: str) -> dict[str, str]:
    return {"COMPOSECACHE_DIR": str(cache_dir), **extra}


def _summary(log: str) -> dict[str, str]:
    out = {}
    for line in log.splitlines():
        if line.startswith("composecache: ") and ": scope " in line:
            service, rest = line[len("composecache: ") :].split(":", 1)
            out[service] = rest.strip()
    return out


def _fallback_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("composecache: warning:")]


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_a_profile_gated_service_gets_the_cache_through_run_rm_and_build(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    """`run --rm tools` and `build tools`: naming the service turns its profile on, for compose and for us."""
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    env = _env(cache_dir, COMPOSECACHE_SCOPE_PREFIX="gated")
    a = sessions.start(leg)
    ran = harness.composecache(a, "-p", "a", *PLAIN, "run", "--rm", "tools", "cat", "/tools.txt", cwd=project,
                               extra_env=env)  # fmt: skip
    assert ran.stdout.splitlines()[-1] == "tools", ran.output
    assert list(_summary(ran.output)) == ["tools"], ran.output  # only what this command built
    assert _summary(ran.output)["tools"].endswith("; exported"), ran.output

    b = sessions.start(leg)  # a fresh session: no images, no build cache of its own
    built = harness.composecache(b, "-p", "b", *PLAIN, "build", "tools", cwd=project, extra_env=env)
    harness.assert_all_run_steps_cached(built.output, at_least=1)
    assert list(_summary(built.output)) == ["tools"], built.output
    assert "import from gated/tools" in _summary(built.output)["tools"], built.output
    assert not _fallback_lines(built.output), built.output


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _sub_project(directory: Path, rootfs_tar: Path, word: str) -> None:
    directory.mkdir(parents=True)
    (directory / "compose.yaml").write_text(
        "services:\n  app:\n    build: {context: ., network: none}\n    network_mode: none\n"
    )
    (directory / "Dockerfile").write_text(f"FROM scratch\nADD rootfs.tar /\nRUN echo {word} > /word.txt\n")
    (directory / "rootfs.tar").write_bytes(rootfs_tar.read_bytes())


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_two_sub_projects_of_one_repository_get_two_scopes(
    leg: str, sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    repo = tmp_path / "mono"
    for name in ("shop", "admin"):
        _sub_project(repo / "services" / name, rootfs_tar, name)
    repo.mkdir(exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", "https://bot:t0ken@example.com/acme/mono.git")
    session = sessions.start(leg)
    first = harness.composecache(session, "-p", "shop", *PLAIN, "build", cwd=repo / "services" / "shop",
                                 extra_env=_env(cache_dir))  # fmt: skip
    second = harness.composecache(session, "-p", "admin", *PLAIN, "build", cwd=repo / "services" / "admin",
                                  extra_env=_env(cache_dir))  # fmt: skip
    one, two = _summary(first.output)["app"], _summary(second.output)["app"]
    assert one.startswith("scope example.com/acme/mono/services/shop/app:"), first.output
    assert two.startswith("scope example.com/acme/mono/services/admin/app:"), second.output
    assert "cold (nothing to import)" in two and two.endswith("; exported"), second.output
    assert not any(harness.run_steps(second.output).values()), second.output  # its first build is cold
    assert "t0ken" not in first.output + second.output
    scopes = {path.name for path in cache_dir.rglob("scopes/*")}
    assert len(scopes) >= 2, scopes


def _compose_plugin(leg: str) -> Path:
    prefix = Path(os.environ.get("COMPOSECACHE_TOOLCHAIN", "/opt/composecache-toolchain")) / leg
    return prefix / "docker-config" / "cli-plugins" / "docker-compose"


@pytest.mark.fail_open
def test_each_fallback_prints_one_line_and_compose_builds_as_it_would_alone(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path, cache_dir: Path
) -> None:
    session = sessions.start("stable")
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)

    # 1. The self-check: a compose that reads other files for composecache's list than for the
    #    user's own invocation (here: a wrapper that drops the last file of COMPOSE_FILE).
    wrapper = tmp_path / "compose-wrapper"
    wrapper.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        "files = os.environ.get('COMPOSE_FILE')\n"
        "if files:\n"
        "    sep = os.environ.get('COMPOSE_PATH_SEPARATOR', ':')\n"
        "    os.environ['COMPOSE_FILE'] = sep.join(files.split(sep)[:-1])\n"
        f"os.execv({str(_compose_plugin('stable'))!r}, [sys.argv[0], *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    drifted = harness.composecache(session, "-p", "drift", *PLAIN, "build", cwd=project,
                                   extra_env=_env(cache_dir, COMPOSECACHE_REAL_COMPOSE=str(wrapper)))  # fmt: skip
    lines = _fallback_lines(drifted.output)
    assert len(lines) == 1 and "another project than compose's own discovery" in lines[0], drifted.output
    assert not _summary(drifted.output), drifted.output  # compose alone: no cache lines
    images = harness.docker(session, "images", "--format", "{{.Repository}}").stdout.split()
    assert {f"drift-{name}" for name in ("api", "worker", "web", "docs")} <= set(images), images
    assert not list(cache_dir.rglob("scopes/*")), "a fallback wrote to the cache"

    # The verdict is remembered: the same line again, compose asked nothing more.
    again = harness.composecache(session, "-p", "drift", *PLAIN, "build", cwd=project,
                                 extra_env=_env(cache_dir, COMPOSECACHE_REAL_COMPOSE=str(wrapper)))  # fmt: skip
    assert _fallback_lines(again.output) == lines, again.output

    # 2. A compose file from stdin (composecache cannot read it twice).
    piped = harness.composecache(session, "-f", "-", "-p", "piped", *PLAIN, "build", "web", cwd=project,
                                 extra_env=_env(cache_dir), stdin=(project / "compose.yaml").read_text())  # fmt: skip
    lines = _fallback_lines(piped.output)
    assert len(lines) == 1 and "stdin" in lines[0], piped.output
    assert "piped-web" in harness.docker(session, "images", "--format", "{{.Repository}}").stdout.split()

    # 3. An invalid x-composecache: that service builds, without the cache.
    bad = harness.copy_fixture("badext", tmp_path / "badext", rootfs_tar)
    invalid = harness.composecache(session, "-p", "bad", *PLAIN, "build", cwd=bad, extra_env=_env(cache_dir))
    lines = _fallback_lines(invalid.output)
    assert len(lines) == 1 and "services.app.x-composecache.mode" in lines[0], invalid.output
    assert "bad-app" in harness.docker(session, "images", "--format", "{{.Repository}}").stdout.split()

    # -q: not even that line; the build is the same.
    quiet = harness.composecache(session, "-q", "-p", "bad", *PLAIN, "build", cwd=bad, extra_env=_env(cache_dir))
    assert not _fallback_lines(quiet.output), quiet.output


def test_a_cache_directory_with_a_comma_and_a_quote_in_its_path_works(
    sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path
) -> None:
    """BuildKit reads cache_from / cache_to as CSV: such a path is quoted, and the override's schema accepts it."""
    project = harness.copy_fixture("hello", tmp_path / "hello", rootfs_tar)
    (project / "compose.yaml").write_text(
        "services:\n  app:\n    build: {context: ., network: none}\n    network_mode: none\n"
    )
    cache_dir = tmp_path / 'odd,"cache'
    cache_dir.mkdir()
    env = _env(cache_dir, COMPOSECACHE_SCOPE_PREFIX="odd")
    cold = harness.composecache(sessions.start("stable"), "-p", "a", *PLAIN, "build", cwd=project, extra_env=env)
    assert _summary(cold.output)["app"].endswith("; exported"), cold.output
    warm = harness.composecache(sessions.start("stable"), "-p", "b", *PLAIN, "build", cwd=project, extra_env=env)
    harness.assert_all_run_steps_cached(warm.output, at_least=2)
    assert "import from odd/app" in _summary(warm.output)["app"], warm.output
