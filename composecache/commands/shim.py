"""`composecache shim install|uninstall|status`: wiring and output for composecache.shim.install."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from composecache.commands.app import APP_OPTIONS, CommandState, state_of
from composecache.commands.app import run as run_app
from composecache.output import Output
from composecache.settings import Settings
from composecache.shim import install as shim

DESCRIPTION = """\
Install transparent shims, so that every build a session runs shares the cache.

\b
  <dir>/docker                 build commands go through composecache; every other command
                               runs the real docker at once
  <dir>/docker-compose         the standalone Compose wrapper (Compose v1: its builds reach
                               the cache through `docker build`)
  <plugin-dir>/docker-compose  a docker CLI plugin: `docker compose ...` is cached too

What a shim replaces is kept beside it and comes back on uninstall. In shim mode composecache
takes no options, only the environment (COMPOSECACHE_DIR, COMPOSECACHE_DISABLE=1, ...).
"""
EXAMPLES = """\
\b
Examples:
  composecache shim install                 into /usr/local/bin (root) or ~/.local/bin
  composecache shim install --dir ~/bin --no-plugin
  composecache shim status --json           what is installed and active
  composecache shim uninstall               put back what the shims replaced
"""


app = typer.Typer(
    name="shim",
    help=DESCRIPTION,
    epilog=EXAMPLES,
    no_args_is_help=True,
    **APP_OPTIONS,  # type: ignore[arg-type]
)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Where the docker and docker-compose shims go (default: /usr/local/bin for root, "
                 "else ~/.local/bin); put it first on PATH."),
]  # fmt: skip
PluginDirOption = Annotated[
    Path | None,
    typer.Option("--plugin-dir", help="Where the compose plugin shim goes (default: $DOCKER_CONFIG/cli-plugins, "
                 "else ~/.docker/cli-plugins)."),
]  # fmt: skip
NoPluginOption = Annotated[bool, typer.Option("--no-plugin", help="Leave the docker CLI plugin directory alone.")]


def main(args: list[str], settings: Settings, output: Output) -> int:
    """Run `composecache shim ARGS...`; the exit code (2 for usage errors)."""
    return run_app(app, "shim", args, CommandState(settings, output))


def _places(
    directory: Path | None, plugin_dir: Path | None, no_plugin: bool, env: dict[str, str]
) -> tuple[Path, Path | None]:
    shim_dir = (directory or shim.default_dir(env)).absolute()
    return shim_dir, None if no_plugin else (plugin_dir or shim.default_plugin_dir(env)).absolute()


@app.command("install")
def install_command(
    ctx: typer.Context,
    directory: DirOption = None,
    plugin_dir: PluginDirOption = None,
    no_plugin: NoPluginOption = False,
) -> None:
    """Install the shims (what they replace is kept beside them)."""
    env = dict(os.environ)
    shim_dir, plugins = _places(directory, plugin_dir, no_plugin, env)
    _print_changes(shim.install(shim_dir, plugins, env))
    for state in shim.status(shim_dir, plugins, env):
        if state.installed and not state.active:
            state_of(ctx).output.warn(f"{shim.TITLES[state.kind]} shim: {state.note}")


@app.command("uninstall")
def uninstall_command(
    directory: DirOption = None, plugin_dir: PluginDirOption = None, no_plugin: NoPluginOption = False
) -> None:
    """Remove the shims and put back what they replaced."""
    shim_dir, plugins = _places(directory, plugin_dir, no_plugin, dict(os.environ))
    changes = shim.uninstall(shim_dir, plugins)
    _print_changes(changes)
    if not changes:
        print("no composecache shims found")


@app.command("status")
def status_command(
    directory: DirOption = None,
    plugin_dir: PluginDirOption = None,
    no_plugin: NoPluginOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Which shims are installed, what each wraps, and whether it is the one PATH (or the docker CLI) finds."""
    env = dict(os.environ)
    shim_dir, plugins = _places(directory, plugin_dir, no_plugin, env)
    states = shim.status(shim_dir, plugins, env)
    if as_json:
        print(json.dumps([_as_json(state) for state in states], indent=2))
        return
    for state in states:
        title = f"{shim.TITLES[state.kind]:<15}"
        if state.installed:
            wired = f"{state.path} -> {state.real or 'docker compose'}"
            print(f"{title}{wired}{' (active)' if state.active else ''}"
                  + (f"\n{'':<15}{state.note}" if state.note else ""))  # fmt: skip
        else:
            print(f"{title}{state.path}: {state.note}")


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
