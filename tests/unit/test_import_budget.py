"""The hot paths stay light: what a build imports, checked in a real subprocess (fake docker and compose).

Speed itself is a bench figure (bench/overhead.py: overhead_ms under 150 ms);
this pins the imports that would undo it without anyone noticing: typer
(with its vendored click) and rich are for composecache's own subcommands,
jsonschema checks x-composecache only when compose is asked, the YAML parser
reads `compose config` output only when the session memo misses, the
crash log (with traceback) is written only after an internal error, and the
build path's records are NamedTuples and plain classes, not dataclasses
(whose import, with inspect, and per-class code generation cost ~50 ms of a
3-service build here).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Never on a build's hot path (typer vendors click as typer._click; a plain `click` would be the same cost).
HEAVY = ("typer", "click", "rich", "jsonschema", "ruamel", "packaging", "argparse", "logging", "concurrent",
         "asyncio", "tempfile", "composecache.commands", "composecache.crashlog", "traceback")  # fmt: skip
# Only when compose is asked (a memo miss): the parser of its output; the .env reader only when
# there is a .env; shutil (bz2, lzma: ~4 ms) only when the tools are probed.
MISS_ONLY = ("yaml", "composecache.yaml", "composecache.compose.dotenv", "shutil")
# Off the hot paths (a miss loads them with jsonschema): the build path's records are NamedTuples and plain classes.
RECORDS = ("dataclasses", "inspect")

WRAPPER = """
import atexit, json, os, sys

def dump():
    with open(os.environ["MODULES_OUT"], "w") as handle:
        json.dump(sorted(sys.modules), handle)

def become(file, args, env):  # a passthrough: what was loaded when composecache handed over
    dump()
    os._exit(0)

atexit.register(dump)
os.execvpe = become
from composecache.cli import main
sys.exit(main(sys.argv[1:]))
"""
DOCKER = """#!/bin/sh
case "$*" in
  *"buildx inspect"*) printf 'Name: default\\nDriver: docker\\n' ;;
  *"info --format"*) echo '{"DriverStatus": [["type", "io.containerd.snapshotter.v1"]], "DockerRootDir": "/no"}' ;;
  *"buildx version"*) echo "github.com/docker/buildx v0.13.1 0" ;;
esac
"""
COMPOSE = """#!/bin/sh
for last; do :; done
if [ "$*" = "version --short" ]; then echo 2.26.1; fi
if [ "$last" = config ]; then cat "$CONFIG_OUTPUT"; fi
"""
CONFIG_OUTPUT = """name: shop
services:
  api:
    build: {{context: {context}, network: none}}
    x-composecache: {{mode: min}}
  db:
    image: postgres
"""


@dataclass
class Machine:
    root: Path
    env: dict[str, str]

    def modules(self, *args: str, cwd: Path | None = None) -> set[str]:
        """The modules `composecache ARGS...` had loaded when it exited (or exec'd the real tool)."""
        out = self.root / "modules.json"
        result = subprocess.run([sys.executable, "-c", WRAPPER, *args], env={**self.env, "MODULES_OUT": str(out)},
                                cwd=cwd or self.root / "project", capture_output=True, text=True, timeout=60,
                                check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr, result.stderr  # the path under test, not a fallback
        return set(json.loads(out.read_text()))


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    bin_dir, plugins, project = tmp_path / "bin", tmp_path / "config" / "cli-plugins", tmp_path / "project"
    for directory in (bin_dir, plugins, project / "api"):
        directory.mkdir(parents=True)
    for path, text in ((bin_dir / "docker", DOCKER), (bin_dir / "docker-compose", COMPOSE),
                       (plugins / "docker-buildx", DOCKER)):  # fmt: skip
        path.write_text(text)
        path.chmod(0o755)
    (project / "compose.yaml").write_text("services:\n  api:\n    build: {context: api, network: none}\n")
    (project / "api" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "config-output.yaml").write_text(CONFIG_OUTPUT.format(context=project / "api"))
    daemon = socket.socket(socket.AF_UNIX)  # the memo keys on the daemon's socket: it must exist
    daemon.bind(str(tmp_path / "docker.sock"))
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(plugins.parent),
        "DOCKER_HOST": f"unix://{tmp_path / 'docker.sock'}", "COMPOSECACHE_REAL_DOCKER": str(bin_dir / "docker"),
        "COMPOSECACHE_REAL_COMPOSE": str(bin_dir / "docker-compose"), "COMPOSECACHE_DIR": str(tmp_path / "cache"),
        "COMPOSECACHE_MEMO_DIR": str(tmp_path / "memo"), "CONFIG_OUTPUT": str(tmp_path / "config-output.yaml"),
        "COMPOSECACHE_STRICT": "1", "PYTHONPATH": os.pathsep.join(sys.path),
    }  # fmt: skip
    try:
        yield Machine(tmp_path, env)
    finally:
        daemon.close()


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(f"{name}.") for name in names))


def test_compose_build_loads_nothing_heavy_and_a_memo_hit_neither_parses_yaml_nor_checks_a_schema(
    machine: Machine,
) -> None:
    miss = machine.modules("build")
    checking = {"jsonschema", "tempfile"}  # jsonschema imports tempfile itself
    assert _loaded(miss, tuple(name for name in HEAVY if name not in checking)) == []
    assert "jsonschema" in miss and "yaml" in miss, "a miss asks compose and checks x-composecache"
    hit = machine.modules("build")
    assert _loaded(hit, (*HEAVY, *MISS_ONLY, *RECORDS)) == [], "the memo holds the project and the verdict"


@pytest.mark.parametrize(
    ("args", "shim"),
    [(["docker", "build", "-t", "shop/api", "api"], ""), (["docker", "build", "api"], "docker"),
     (["--", "up", "--build"], "compose"), (["docker", "compose", "build"], "plugin"), (["ps"], ""),
     (["docker", "ps"], "")],
)  # fmt: skip
def test_docker_build_the_shim_dispatch_and_passthrough_load_nothing_heavy(
    machine: Machine, args: list[str], shim: str
) -> None:
    machine.modules("build")  # the session memo knows the project and the tools
    machine.env["COMPOSECACHE_SHIM"] = shim
    assert _loaded(machine.modules(*args), HEAVY) == []
    assert _loaded(machine.modules(*args), (*HEAVY, *MISS_ONLY, *RECORDS)) == [], "the builder's memo hit asks nothing"
