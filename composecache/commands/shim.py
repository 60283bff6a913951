"""`composecache shim install|uninstall|status`: wiring and output for composecache.shim.install."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from composecache.errors import UsageError
from composecache.output import Output
from composecache.settings import Settings
from composecache.shim import install as shim

DESCRIPTION = """\
Install transparent shims so every build a session runs shares the cache:
  <dir>/docker          build commands go through composecache, the rest run the real docker at once
  <dir>/docker-compose  the standalone Compose wrapper (Compose v1: builds reach the cache via `docker build`)
  <plugin-dir>/docker-compose
                        a docker CLI plugin, so `docker compose ...` through the real docker CLI is cached too
What a shim replaces is kept beside it and comes back on uninstall. In shim mode composecache
takes no options, only the environment (COMPOSECACHE_DIR, COMPOSECACHE_DISABLE=1, ...).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, hint="see composecache shim --help")


def _parser(env: dict[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="composecache shim", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("action", choices=("install", "uninstall", "status"))
    parser.add_argument("--dir", type=Path, default=shim.default_dir(env),
                        help="where the docker and docker-compose shims go (default: /usr/local/bin for root, "
                             "else ~/.local/bin; put it first on PATH)")  # fmt: skip
    parser.add_argument("--plugin-dir", type=Path, default=shim.default_plugin_dir(env),
                        help="where the compose plugin shim goes (default: $DOCKER_CONFIG/cli-plugins, "
                             "else ~/.docker/cli-plugins)")  # fmt: skip
    parser.add_argument("--no-plugin", action="store_true", help="leave the docker CLI plugin directory alone")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    return parser


def main(args: list[str], settings: Settings, output: Output) -> int:
    env = dict(os.environ)
    options = _parser(env).parse_args(args)
    directory = options.dir.absolute()
    plugin_dir = None if options.no_plugin else options.plugin_dir.absolute()
    if options.action == "install":
        changes = shim.install(directory, plugin_dir, env)
        _print_changes(changes)
        for state in shim.status(directory, plugin_dir, env):
            if state.installed and not state.active:
                output.warn(f"{shim.TITLES[state.kind]} shim: {state.note}")
        return 0
    if options.action == "uninstall":
        changes = shim.uninstall(directory, plugin_dir)
        _print_changes(changes)
        if not changes:
            print("no composecache shims found")
        return 0
    states = shim.status(directory, plugin_dir, env)
    if options.json:
        print(json.dumps([_as_json(state) for state in states], indent=2))
    else:
        for state in states:
            title = f"{shim.TITLES[state.kind]:<15}"
            if state.installed:
                wired = f"{state.path} -> {state.real or 'docker compose'}"
                print(f"{title}{wired}{' (active)' if state.active else ''}"
                      + (f"\n{'':<15}{state.note}" if state.note else ""))  # fmt: skip
            else:
                print(f"{title}{state.path}: {state.note}")
    return 0


def _print_changes(changes: list[shim.Change]) -> None:
    for change in changes:
        detail = f" {change.detail}" if change.detail else ""
        print(f"{shim.TITLES[change.kind]:<15}{change.action} {change.path}{detail}", file=sys.stdout)


def _as_json(state: shim.ShimStatus) -> dict[str, object]:
    return {
        "kind": state.kind,
        "path": str(state.path),
        "installed": state.installed,
        "active": state.active,
        "real": str(state.real) if state.real else None,
        "backup": str(state.backup) if state.backup else None,
        "note": state.note,
    }
