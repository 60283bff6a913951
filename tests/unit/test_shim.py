"""The shims: what they route where, and install / uninstall / status (fake binaries, no daemon)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from composecache.errors import ComposecacheError
from composecache.session import toolchain
from composecache.shim import install as shim
from tests.tree_snapshot import snapshot

FAKE = """#!/bin/sh
echo "{name} $*"
echo "shim=${{COMPOSECACHE_SHIM-}} docker=${{COMPOSECACHE_REAL_DOCKER-}} compose=${{COMPOSECACHE_REAL_COMPOSE-}} \
cli=${{COMPOSE_DOCKER_CLI_BUILD-}}"
"""


def _fake(path: Path, name: str, body: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if body is not None else FAKE.format(name=name))
    path.chmod(0o755)
    return path


class Machine:
    """A PATH with a shim dir first, a real docker, a docker config with a compose plugin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shims = root / "shims"
        self.shims.mkdir()
        self.real_bin = root / "real"
        self.docker = _fake(self.real_bin / "docker", "REAL-DOCKER")
        self.config = root / "config"
        self.plugins = self.config / "cli-plugins"
        self.plugin = _fake(self.plugins / "docker-compose", "REAL-PLUGIN")
        self.python = _fake(root / "py" / "python", "PYTHON")
        self.env = {
            "PATH": f"{self.shims}:{self.real_bin}",  # nothing of the machine's own (its docker-compose)
            "DOCKER_CONFIG": str(self.config),
            "HOME": str(root / "home"),
        }

    def install(self) -> list[shim.Change]:
        return shim.install(self.shims, self.plugins, self.env, python=self.python)

    def uninstall(self) -> list[shim.Change]:
        return shim.uninstall(self.shims, self.plugins)

    def run(self, name: str, *args: str, **extra: str) -> str:
        path = self.plugins / "docker-compose" if name == "plugin" else self.shims / name
        result = subprocess.run([str(path), *args], env={**self.env, **extra}, capture_output=True, text=True,
                                check=True)  # fmt: skip
        return result.stdout


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    monkeypatch.setattr(shim, "package_owner", lambda path, env: None)
    return Machine(tmp_path)


@pytest.mark.parametrize(
    ("args", "to_python"),
    [
        (["build", "-t", "x", "."], True),
        (["buildx", "build", "."], True),
        (["buildx", "b", "."], True),
        (["buildx", "--builder", "bk", "build", "."], True),
        (["builder", "build", "."], True),
        (["image", "build", "."], True),
        (["-H", "unix:///s", "build", "."], True),
        (["--host", "unix:///s", "--context", "c", "compose", "up"], True),
        (["-D", "-l", "debug", "buildx", "build", "."], True),
        (["compose", "build"], True),
        (["compose", "-f", "a.yml", "-p", "x", "--profile", "p", "up", "--build"], True),
        (["compose", "--project-name=x", "run", "api"], True),
        (["compose", "create"], True),
        (["compose", "watch"], True),
        (["ps", "-a"], False),
        (["run", "--rm", "img", "build"], False),
        (["--context", "build", "ps"], False),
        (["-H", "build", "images"], False),
        (["buildx", "ls"], False),
        (["buildx", "bake"], False),
        (["builder", "prune"], False),
        (["image", "ls"], False),
        (["compose", "ps", "--format", "json"], False),
        (["compose", "-p", "build", "down"], False),
        (["compose", "logs", "build"], False),
        (["version", "--format", "{{.Client.Version}}"], False),
        (["frobnicate"], False),
        (["--version"], False),
        ([], False),
    ],
)
def test_docker_shim_sends_only_builds_to_composecache(machine: Machine, args: list[str], to_python: bool) -> None:
    machine.install()
    out = machine.run("docker", *args)
    if to_python:
        assert out.splitlines()[0] == " ".join(["PYTHON", "-I", "-m", "composecache", "docker", *args])
        assert f"shim=docker docker={machine.docker} " in out
    else:
        assert out.splitlines()[0].rstrip() == " ".join(["REAL-DOCKER", *args])
        assert "shim= docker= compose=" in out  # nothing of ours leaks into a passthrough


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_disable_is_a_pure_passthrough(machine: Machine, value: str) -> None:
    machine.install()
    assert machine.run("docker", "build", ".", COMPOSECACHE_DISABLE=value).startswith("REAL-DOCKER build .")
    assert machine.run("plugin", "compose", "up", COMPOSECACHE_DISABLE=value).startswith("REAL-PLUGIN compose up")


def test_disable_zero_does_not_disable(machine: Machine) -> None:
    machine.install()
    assert machine.run("docker", "build", ".", COMPOSECACHE_DISABLE="0").startswith("PYTHON")


def test_plugin_shim(machine: Machine) -> None:
    machine.install()
    backup = machine.plugins / ".docker-compose.composecache-orig"
    assert machine.run("plugin", "docker-cli-plugin-metadata").startswith("REAL-PLUGIN docker-cli-plugin-metadata")
    assert machine.run("plugin", "compose", "ps").startswith("REAL-PLUGIN compose ps")
    assert machine.run("plugin", "-H", "unix:///s", "compose", "logs").startswith("REAL-PLUGIN -H unix:///s")
    out = machine.run("plugin", "-H", "unix:///s", "compose", "-p", "x", "up", "--build",
                      DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND="/usr/bin/docker")  # fmt: skip
    assert out.splitlines()[0] == "PYTHON -I -m composecache docker -H unix:///s compose -p x up --build"
    assert f"shim=plugin docker=/usr/bin/docker compose={backup} " in out


def test_standalone_compose_shim_over_compose_v2(machine: Machine) -> None:
    real = _fake(machine.real_bin / "docker-compose", "REAL-COMPOSE",
                 '#!/bin/sh\n[ "$1 $2" = "version --short" ] && echo 2.26.1 && exit 0\n'
                 + FAKE.format(name="REAL-COMPOSE").split("\n", 1)[1])  # fmt: skip
    machine.install()
    assert machine.run("docker-compose", "ps").startswith("REAL-COMPOSE ps")
    out = machine.run("docker-compose", "-f", "x.yml", "build", "api")
    assert out.splitlines()[0] == "PYTHON -I -m composecache -- -f x.yml build api"
    assert f"compose={real} " in out
    assert "shim=compose" in out


def test_standalone_compose_shim_over_compose_v1_only_turns_cli_build_on(machine: Machine) -> None:
    _fake(machine.real_bin / "docker-compose", "V1", "#!/usr/bin/python3\n")  # a python script: Compose v1
    changes = machine.install()
    assert any(c.kind == "compose" and "Compose v1" in c.detail for c in changes)
    script = (machine.shims / "docker-compose").read_text()
    assert "-m composecache" not in script
    (machine.real_bin / "docker-compose").write_text('#!/bin/sh\necho "V1 $* cli=$COMPOSE_DOCKER_CLI_BUILD"\n')
    assert machine.run("docker-compose", "build").strip() == "V1 build cli=1"
    assert machine.run("docker-compose", "build", COMPOSE_DOCKER_CLI_BUILD="0").strip() == "V1 build cli=0"


def test_standalone_compose_shim_without_a_standalone_compose_is_docker_compose(machine: Machine) -> None:
    machine.install()
    assert machine.run("docker-compose", "ps").startswith("REAL-DOCKER compose ps")
    out = machine.run("docker-compose", "up", "--build")
    assert out.splitlines()[0] == "PYTHON -I -m composecache -- up --build"
    assert f"docker={machine.docker} " in out


def test_uninstall_restores_everything_exactly_and_installing_twice_is_harmless(machine: Machine) -> None:
    existing = _fake(machine.shims / "docker-compose", "OLD-WRAPPER")  # an existing wrapper in the shim dir
    (machine.plugins / "docker-buildx").symlink_to("/nonexistent/docker-buildx")
    before = snapshot(machine.shims, machine.config)
    first = machine.install()
    assert {c.action for c in first} == {"installed"}
    after_first = snapshot(machine.shims, machine.config)
    second = machine.install()
    assert {c.action for c in second} == {"unchanged"}
    assert snapshot(machine.shims, machine.config) == after_first
    # The existing wrapper keeps working behind the shim.
    assert machine.run("docker-compose", "ps").startswith("OLD-WRAPPER ps")
    assert toolchain.shim_target(machine.shims / "docker-compose") == shim.backup_path(existing)
    machine.uninstall()
    assert snapshot(machine.shims, machine.config) == before


def test_symlinked_plugin_is_moved_aside_and_restored_as_the_same_symlink(machine: Machine) -> None:
    machine.plugin.rename(machine.root / "plugin-binary")
    machine.plugin.symlink_to(machine.root / "plugin-binary")
    before = snapshot(machine.config)
    machine.install()
    assert (machine.plugins / ".docker-compose.composecache-orig").is_symlink()
    assert machine.run("plugin", "compose", "ps").startswith("REAL-PLUGIN compose ps")
    machine.uninstall()
    assert snapshot(machine.config) == before


def test_directories_the_install_created_are_removed_again(machine: Machine) -> None:
    directory = machine.root / "new" / "bin"
    plugins = machine.root / "home" / ".docker" / "cli-plugins"
    env = {**machine.env, "PATH": f"{directory}:{machine.real_bin}"}
    before = snapshot(machine.root)
    shim.install(directory, plugins, env, python=machine.python)
    assert (directory / "docker").exists()
    assert toolchain.shim_target(plugins / "docker-compose") == machine.plugin  # found in $DOCKER_CONFIG
    shim.uninstall(directory, plugins)
    assert snapshot(machine.root) == before


def test_a_shim_is_never_recorded_as_the_real_binary(machine: Machine, tmp_path: Path) -> None:
    other = tmp_path / "other-shims"
    shim.install(other, None, {**machine.env, "PATH": f"{other}:{machine.real_bin}"}, python=machine.python)
    env = {**machine.env, "PATH": f"{machine.shims}:{other}:{machine.real_bin}"}
    shim.install(machine.shims, machine.plugins, env, python=machine.python)
    assert toolchain.shim_target(machine.shims / "docker") == machine.docker


def test_package_owned_files_are_never_replaced(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(machine.shims / "docker", "PACKAGED")
    monkeypatch.setattr(shim, "package_owner", lambda path, env: "docker.io" if path.name == "docker" else None)
    before = snapshot(machine.shims, machine.config)
    with pytest.raises(ComposecacheError, match=r"belongs to the package docker\.io"):
        machine.install()
    assert snapshot(machine.shims, machine.config) == before


def test_a_leftover_backup_stops_the_install(machine: Machine) -> None:
    _fake(machine.shims / "docker", "NEW")
    _fake(machine.shims / ".docker.composecache-orig", "OLD")
    with pytest.raises(ComposecacheError, match="already exists"):
        machine.install()


def test_uninstall_leaves_a_file_that_replaced_our_shim(machine: Machine) -> None:
    _fake(machine.shims / "docker", "ORIGINAL")
    machine.install()
    _fake(machine.shims / "docker", "UPGRADED")  # a package upgrade wrote over the shim
    changes = machine.uninstall()
    assert (machine.shims / "docker").read_text().startswith('#!/bin/sh\necho "UPGRADED')
    assert any(c.action == "left" for c in changes)


def test_status_shows_what_is_wired_where(machine: Machine) -> None:
    states = {s.kind: s for s in shim.status(machine.shims, machine.plugins, machine.env)}
    assert not any(s.installed for s in states.values())
    machine.install()
    states = {s.kind: s for s in shim.status(machine.shims, machine.plugins, machine.env)}
    assert states["docker"].installed
    assert states["docker"].active
    assert states["docker"].real == machine.docker
    assert states["plugin"].active
    assert states["plugin"].real == machine.plugins / ".docker-compose.composecache-orig"
    shadowed = {**machine.env, "PATH": f"{machine.real_bin}:{machine.shims}"}
    states = {s.kind: s for s in shim.status(machine.shims, machine.plugins, shadowed)}
    assert not states["docker"].active
    assert "runs instead" in states["docker"].note


def test_compose_command_unwraps_the_plugin_shim(machine: Machine) -> None:
    machine.install()
    assert toolchain.compose_command(machine.env) == [str(machine.plugins / ".docker-compose.composecache-orig")]


def test_no_docker_to_wrap_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shim, "package_owner", lambda path, env: None)
    with pytest.raises(ComposecacheError, match="no docker CLI"):
        shim.install(tmp_path / "d", None, {"PATH": str(tmp_path / "empty")}, python=Path("/usr/bin/python3"))


def test_shim_command_line(
    machine: Machine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from composecache.commands import shim as command
    from composecache.output import Output
    from composecache.settings import Settings

    for key, value in machine.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "executable", str(machine.python))
    settings = Settings(cache_dir=machine.root / "cache")
    assert command.main(["install", "--dir", str(machine.shims)], settings, Output()) == 0
    assert "installed" in capsys.readouterr().out
    assert command.main(["status", "--dir", str(machine.shims), "--json"], settings, Output()) == 0
    assert '"active": true' in capsys.readouterr().out
    assert command.main(["uninstall", "--dir", str(machine.shims)], settings, Output()) == 0
    assert "restored" in capsys.readouterr().out


def test_a_shim_whose_python_is_gone_still_runs_the_build_unchanged(machine: Machine) -> None:
    machine.install()
    machine.python.unlink()
    assert machine.run("docker", "build", ".").startswith("REAL-DOCKER build .")
    assert machine.run("plugin", "compose", "up").startswith("REAL-PLUGIN compose up")


def test_doctor_reports_the_shims_in_effect(machine: Machine) -> None:
    assert shim.doctor_findings(machine.env)[0][1].startswith("shims: not installed")
    machine.install()
    findings = shim.doctor_findings(machine.env)
    assert [ok for ok, _, _ in findings] == [True, True, True]
    machine.docker.unlink()
    ok, text, fix = shim.doctor_findings(machine.env)[0]
    assert not ok
    assert "missing" in text
    assert fix is not None
