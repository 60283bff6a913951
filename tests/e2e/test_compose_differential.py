"""composecache against compose itself: the same project, from the same files, for every way of naming it.

A matrix of ways to name and select a project (-f lists; COMPOSE_FILE in the
environment or in env files with comments, quotes, interpolation and repeated
keys; COMPOSE_ENV_FILES and --env-file; COMPOSE_PATH_SEPARATOR; discovery from
subdirectories; override files; --project-directory; -p; --profile;
COMPOSE_PROFILES; services named on the command line) x the subcommands
build / up / run / create.  For each, on both toolchain legs:

- `composecache --dry-run` (strict mode: a fallback fails the case) prints the
  command, the environment and the override it would run compose with;
- that command's model (`compose ... config SERVICE...` with the override)
  minus the override's cache_from / cache_to is compose's own model for the
  user's invocation;
- the override covers exactly the services compose builds for the command:
  those of compose's model for `config SERVICE...` that have a build section
  (for `build SERVICE...` only the named ones unless --with-dependencies; with
  --no-deps only the named ones).

Only `docker compose config` runs: no daemon.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import harness

LEGS = ("stable", "latest")

BASE = """\
services:
  app:
    build: .
    depends_on: [db]
    environment:
      TAG: ${TAG:-none}
  db:
    build: ./db
  tool:
    build:
      context: ./tool
    profiles: [tools]
    depends_on: [db]
  extra:
    build: ./extra
    profiles: [extra]
  web:
    image: example/web
  twin-a:
    image: example/twin
    build: ./twin
  twin-b:
    image: example/twin
    build: ./twin
"""
OVERRIDE = """\
services:
  app:
    environment:
      FROM_OVERRIDE: "1"
  dev:
    build: ./dev
"""
DEV = """\
services:
  devtool:
    build: ../devtool
  app:
    environment:
      FROM_DEV: "${TAG:-unset}"
"""
LEGACY = """\
services:
  old:
    build: .
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_project(root: Path) -> Path:
    repo = root / "repo"
    _write(repo / "compose.yaml", BASE)
    _write(repo / "compose.override.yaml", OVERRIDE)
    _write(repo / "docker" / "compose.dev.yml", DEV)
    _write(repo / "legacy" / "docker-compose.yml", LEGACY)
    _write(repo / "legacy" / "docker-compose.override.yml", "services:\n  old:\n    environment: [X=1]\n")
    for context in ("", "db", "tool", "extra", "twin", "dev", "devtool", "legacy"):
        _write(repo / context / "Dockerfile", "FROM scratch\n")
    (repo / "sub" / "deeper").mkdir(parents=True)
    return repo


@dataclass(frozen=True)
class Naming:
    name: str
    cwd: str = "."  # relative to the repository
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # extra files (env files) to write


NAMINGS = [
    Naming("discovery"),
    Naming("discovery-from-subdirectory", cwd="sub/deeper"),
    Naming("legacy-names-and-override", cwd="legacy"),
    Naming("f-one", args=("-f", "compose.yaml")),
    Naming("f-two", args=("-f", "compose.yaml", "--file=docker/compose.dev.yml")),
    Naming("f-from-subdirectory", cwd="sub", args=("-f", "../compose.yaml")),
    Naming("f-project-directory", args=("-f", "compose.yaml", "--project-directory", "sub")),
    Naming("project-directory-discovery", args=("--project-directory", "docker")),
    Naming("compose-file-env", env={"COMPOSE_FILE": "compose.yaml:docker/compose.dev.yml"}),
    Naming("compose-file-env-separator",
           env={"COMPOSE_FILE": "compose.yaml;docker/compose.dev.yml", "COMPOSE_PATH_SEPARATOR": ";"}),
    Naming("compose-file-env-project-directory", env={"COMPOSE_FILE": "compose.yaml"},
           args=("--project-directory", "sub")),
    Naming("dotenv-plain", files={".env": "COMPOSE_FILE=compose.yaml:docker/compose.dev.yml\n"}),
    Naming("dotenv-comments-quotes-export", files={".env": (
        "# the files\n\n  export COMPOSE_FILE=\"compose.yaml:docker/compose.dev.yml\" # dev too\n"
        "TAG='v1 # not a comment'\n"
    )}),
    Naming("dotenv-interpolation", files={".env": "BASE=docker\nCOMPOSE_FILE=compose.yaml:${BASE}/compose.dev.yml\n"}),
    Naming("dotenv-default-interpolation",
           files={".env": "COMPOSE_FILE=compose.yaml:${DIR:-docker}/compose.dev.yml\nTAG=${TAG:-dotenv}\n"}),
    Naming("dotenv-repeated-keys",
           files={".env": "COMPOSE_FILE=compose.yaml\nCOMPOSE_FILE=compose.yaml:docker/compose.dev.yml\n"}),
    Naming("dotenv-separator",
           files={".env": "COMPOSE_PATH_SEPARATOR=,\nCOMPOSE_FILE=compose.yaml,docker/compose.dev.yml\n"}),
    Naming("dotenv-yaml-style-and-single-quotes", files={".env": "COMPOSE_FILE: 'compose.yaml'\nTAG: yaml\n"}),
    Naming("os-env-wins-over-dotenv", env={"COMPOSE_FILE": "compose.yaml"},
           files={".env": "COMPOSE_FILE=compose.yaml:docker/compose.dev.yml\n"}),
    Naming("dotenv-from-subdirectory", cwd="sub/deeper", files={".env": "COMPOSE_FILE=compose.yaml\nTAG=root\n"}),
    Naming("dotenv-in-subdirectory", cwd="sub", files={"sub/.env": "COMPOSE_FILE=../compose.yaml\nTAG=sub\n"}),
    Naming("compose-env-files", env={"COMPOSE_ENV_FILES": "envs/dev.env"},
           files={"envs/dev.env": "COMPOSE_FILE=compose.yaml:docker/compose.dev.yml\nTAG=dev\n"}),
    Naming("compose-env-files-two", env={"COMPOSE_ENV_FILES": "envs/a.env,envs/b.env"},
           files={"envs/a.env": "TAG=a\nCOMPOSE_FILE=compose.yaml\n",
                  "envs/b.env": "COMPOSE_FILE=compose.yaml:docker/compose.dev.yml\n"}),
    Naming("env-file-flag", args=("--env-file", "envs/dev.env"),
           files={"envs/dev.env": "COMPOSE_FILE=compose.yaml:docker/compose.dev.yml\nTAG=flag\n"}),
    Naming("dotenv-profiles", files={".env": "COMPOSE_PROFILES=tools\nTAG=profiles\n"}),
    Naming("dotenv-first-file-elsewhere-crlf",
           files={".env": "TAG=root\r\nCOMPOSE_FILE=docker/compose.dev.yml:compose.yaml\r\n"}),
]  # fmt: skip


@dataclass(frozen=True)
class Selection:
    name: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


SELECTIONS = [
    Selection("all"),
    Selection("project-name", args=("-p", "other")),
    Selection("profile", args=("--profile", "tools")),
    Selection("compose-profiles", env={"COMPOSE_PROFILES": "tools,extra"}),
]

# (subcommand arguments, the services they name)
COMMANDS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("build",), ()),
    (("up", "-d"), ()),
    (("create",), ()),
    (("build", "tool"), ("tool",)),  # behind an inactive profile: naming it turns it on
    (("build", "--with-dependencies", "tool"), ("tool",)),
    (("run", "--rm", "tool", "true"), ("tool",)),
    (("up", "-d", "app"), ("app",)),
    (("up", "-d", "--no-deps", "app"), ("app",)),
    (("create", "twin-b"), ("twin-b",)),
]


def _cases() -> list[tuple[Naming, Selection, tuple[str, ...], tuple[str, ...]]]:
    """Every naming with two commands and a selection, rotating so that every command and
    selection meets many namings (the full product would take minutes)."""
    cases = []
    for n, naming in enumerate(NAMINGS):
        for c in (n % len(COMMANDS), (n + 4) % len(COMMANDS)):
            command, services = COMMANDS[c]
            selection = SELECTIONS[(n + c) % len(SELECTIONS)]
            cases.append((naming, selection, command, services))
    return cases


CASES = _cases()


def _leg_env(leg: str, cache_dir: Path, memo_dir: Path) -> dict[str, str]:
    prefix = Path(os.environ.get("COMPOSECACHE_TOOLCHAIN", "/opt/composecache-toolchain")) / leg
    if not (prefix / "bin" / "docker").exists():
        if harness.in_ci():
            pytest.fail(f"CI=true and the {leg} toolchain is missing")
        pytest.skip(f"the {leg} toolchain is not installed")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "COMPOSECACHE_"))}
    env.pop("PWD", None)
    env.update(
        PATH=f"{prefix / 'bin'}:{env['PATH']}",
        DOCKER_CONFIG=str(prefix / "docker-config"),
        DOCKER_HOST="unix:///nonexistent/docker.sock",
        COMPOSECACHE_DIR=str(cache_dir),
        COMPOSECACHE_MEMO_DIR=str(memo_dir),
        COMPOSECACHE_SCOPE_PREFIX="diff",
        COMPOSECACHE_STRICT="1",
        NO_COLOR="1",
    )
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _parse_dry_run(stdout: str) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(override document, command argv, environment changes) from `composecache --dry-run` output."""
    lines = stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("# override file")))
    end = lines.index("# command:")
    document = yaml.safe_load("\n".join(line[4:] for line in lines[start + 1 : end])) or {}
    argv = shlex.split(lines[end + 1])
    env: dict[str, str] = {}
    if "# environment:" in lines:
        for line in lines[lines.index("# environment:") + 1 :]:
            if line.startswith("# "):
                break
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return document, argv, env


def _strip_cache(model: Any, added: dict[str, Any]) -> Any:
    """The model without the cache_from / cache_to entries the override added."""
    for name, service in (added.get("services") or {}).items():
        build = model["services"][name]["build"]
        for key, values in service["build"].items():
            kept = [v for v in build.get(key, []) if v not in [x.replace("$$", "$") for x in values]]
            if kept:
                build[key] = kept
            else:
                build.pop(key, None)
    return model


def _expected_built(model: dict[str, Any], command: tuple[str, ...], services: tuple[str, ...]) -> set[str]:
    """compose's rule (cmd/compose build.go, up.go, run.go): what the command builds of the loaded model."""
    loaded = {name for name, service in (model.get("services") or {}).items() if "build" in service}
    if not services:
        return loaded
    if command[0] == "build":
        return loaded if "--with-dependencies" in command else loaded & set(services)
    return loaded & set(services) if "--no-deps" in command else loaded


def _followers(model: dict[str, Any], built: set[str]) -> set[str]:
    """Services that build the same image the same way as one built before them (in compose's order):
    they share its scope and its export and only import, and a cold cache has nothing to import, so the
    override leaves them out."""
    first_of: dict[str, str] = {}
    followers = set()
    for name, service in (model.get("services") or {}).items():
        if "build" in service and service.get("image"):
            key = repr((service["image"], service["build"]))
            if key in first_of and first_of[key] in built:
                followers.add(name)
            first_of.setdefault(key, name)
    return followers


def check_case(
    leg_env: dict[str, str], root: Path, naming: Naming, selection: Selection, command: tuple[str, ...],
    services: tuple[str, ...],
) -> str | None:  # fmt: skip
    """None when composecache agrees with compose for this case; else what differs."""
    repo = root / "repo"
    for name, text in naming.files.items():
        _write(repo / name, text)
    cwd = repo / naming.cwd
    env = {**leg_env, **naming.env, **selection.env, "PWD": str(cwd)}
    globals_ = [*naming.args, *selection.args]
    where = f"{naming.name} x {selection.name} x {' '.join(command)}"
    compose = ["docker", "compose"]
    config_tail = ["config", *(["--", *services] if services else [])]
    own = _run([*compose, *globals_, *config_tail], env, cwd)
    dry = _run([sys.executable, "-m", "composecache", "--dry-run", *globals_, *command], env, cwd)
    if "Traceback" in dry.stderr:
        return f"{where}: traceback\n{dry.stderr}"
    if own.returncode != 0:  # compose cannot load it: neither may composecache pretend it can
        return None if dry.returncode != 0 else f"{where}: compose fails ({own.stderr.strip()}) but the dry run passed"
    if dry.returncode != 0:
        return f"{where}: dry run failed\n{dry.stdout}\n{dry.stderr}"
    document, argv, changes = _parse_dry_run(dry.stdout)
    override_path = root / "override.yaml"
    override_path.write_text(dry.stdout.split("# override file", 1)[1].split("# command:", 1)[0].split("\n", 1)[1]
                             .replace("#   ", "").replace("<random>", "x"))  # fmt: skip
    argv = [arg.replace("<override>", str(override_path)) for arg in argv]
    changes = {key: value.replace("<override>", str(override_path)) for key, value in changes.items()}
    head = argv[: len(argv) - len(command)]
    assert argv[len(head) :] == list(command), where
    with_override = _run([*head, *config_tail], {**env, **changes}, cwd)
    if with_override.returncode != 0:
        return f"{where}: composecache's command does not load\n{with_override.stderr}"
    theirs = yaml.safe_load(own.stdout)
    ours = _strip_cache(yaml.safe_load(with_override.stdout), yaml.safe_load(override_path.read_text()) or {})
    if ours != theirs:
        return (f"{where}: composecache's command gives another model\n--- compose\n{own.stdout}\n"
                f"--- ours\n{with_override.stdout}")  # fmt: skip
    expected = _expected_built(theirs, command, services) - _followers(
        theirs, _expected_built(theirs, command, services)
    )
    covered = set((document.get("services") or {}).keys())
    if covered != expected:
        return f"{where}: the override covers {sorted(covered)}, compose builds {sorted(expected)}"
    return None


@pytest.mark.parametrize("leg", LEGS)
def test_composecache_builds_exactly_what_compose_builds(leg: str, tmp_path: Path) -> None:
    leg_env = _leg_env(leg, tmp_path / "cache", tmp_path / "memo")
    (tmp_path / "cache").mkdir()

    def one(index: int) -> str | None:
        naming, selection, command, services = CASES[index]
        root = tmp_path / f"case{index}"
        make_project(root)
        return check_case(leg_env, root, naming, selection, command, services)

    with ThreadPoolExecutor(max_workers=2) as pool:
        problems = [problem for problem in pool.map(one, range(len(CASES))) if problem]
    assert len(CASES) >= 45
    assert not problems, f"{len(problems)} of {len(CASES)} cases differ:\n\n" + "\n\n".join(problems)
    assert not any((tmp_path / "cache").iterdir()), "a dry run wrote to the cache"
