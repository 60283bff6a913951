"""The text of the shims: tiny POSIX sh scripts, no Python for anything but builds.

Each shim finds the command word after docker's global options (and, for
compose, after compose's global options) with one `case` per argument and
stops at the first word: `docker run ...`, `docker ps ...`, `docker compose
ps` exec the real binary at once (about a millisecond of dash).  Only build
commands exec `<python> -I -m composecache ...`, with the real binaries in
COMPOSECACHE_REAL_DOCKER / COMPOSECACHE_REAL_COMPOSE so composecache never
finds a shim again.  The header records what the shim wraps; `toolchain`
reads `# real:` and the marker (`composecache-shim`, in the first 512 bytes).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

MARKER = "composecache-shim"
DOCKER = "docker"  # <dir>/docker
COMPOSE = "compose"  # <dir>/docker-compose (standalone)
PLUGIN = "plugin"  # <docker config>/cli-plugins/docker-compose
KINDS = (DOCKER, COMPOSE, PLUGIN)

# What a shim looks for; the lists mirror docker_args / compose.cmdline.
_DOCKER_GLOBAL_VALUES = "-H|--host|-c|--context|--config|-l|--log-level|--tlscacert|--tlscert|--tlskey"
_COMPOSE_GLOBAL_VALUES = ("-f|--file|-p|--project-name|--profile|--env-file|--project-directory|--workdir|--ansi|"
                          "--parallel|--progress")  # fmt: skip
_COMPOSE_BUILDING = "build|up|run|create|watch"


@dataclass(frozen=True)
class ShimScript:
    kind: str
    real: Path | None  # the binary it wraps (None: a docker-compose shim over `docker compose`)
    python: Path
    docker: Path | None = None  # the real docker, for a docker-compose shim without a real docker-compose
    compose_v1: bool = False  # the real docker-compose is Compose v1 (Python)
    created: tuple[Path, ...] = ()  # directories the install created (uninstall removes them if empty)


def quote(value: str) -> str:
    """`value` quoted for sh; a newline would also break the shim's `# real:` header, so it is refused."""
    if "\n" in value or "\0" in value:
        raise ValueError(f"a path with a newline cannot go into a shim: {value!r}")
    return shlex.quote(value)


def _disable_check(exec_line: str) -> str:
    return f"case ${{COMPOSECACHE_DISABLE-}} in\n  1|[Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Oo][Nn]) {exec_line} ;;\nesac\n"


def _scanner(start: str, docker_words: str) -> str:
    """A loop that sets w=go when the arguments are a build; `start` is the first state."""
    return f"""w={start} s=
for a do
  if [ -n "$s" ]; then s=; continue; fi
  case $w:$a in
    docker:{_DOCKER_GLOBAL_VALUES.replace("|", "|docker:")}) s=1 ;;
    docker:-*) ;;
{docker_words}    buildx:--builder) s=1 ;;
    buildx:-*) ;;
    buildx:build|buildx:b|group:build) w=go; break ;;
    compose:{_COMPOSE_GLOBAL_VALUES.replace("|", "|compose:")}) s=1 ;;
    compose:{_DOCKER_GLOBAL_VALUES.replace("|", "|compose:")}) s=1 ;;
    compose:-*) ;;
    compose:{_COMPOSE_BUILDING.replace("|", "|compose:")}) w=go; break ;;
    *) break ;;
  esac
done
"""


def render(script: ShimScript) -> str:
    header = [f"#!/bin/sh\n# {MARKER}: {script.kind}\n"]
    if script.real is not None:
        header.append(f"# real: {script.real}\n")
    if script.docker is not None:
        header.append(f"# docker: {script.docker}\n")
    header.append(f"# python: {script.python}\n")
    header += [f"# created: {directory}\n" for directory in script.created]
    header.append(
        "# Installed by `composecache shim install`; `composecache shim uninstall` puts back what was here.\n"
        "# Build commands go through composecache; everything else runs the real binary at once.\n"
    )
    python = quote(str(script.python))
    if script.kind == DOCKER:
        assert script.real is not None
        body = (
            f"real={quote(str(script.real))}\n"
            + _disable_check('exec "$real" "$@"')
            + _scanner("docker", "    docker:build) w=go; break ;;\n    docker:buildx) w=buildx ;;\n"
                       "    docker:builder|docker:image) w=group ;;\n    docker:compose) w=compose ;;\n")
            + f'if [ "$w" = go ] && [ -x {python} ]; then  # no Python any more: run unchanged (fail open)\n'
            "  COMPOSECACHE_REAL_DOCKER=$real COMPOSECACHE_SHIM=docker\n"
            "  export COMPOSECACHE_REAL_DOCKER COMPOSECACHE_SHIM\n"
            f'  exec {python} -I -m composecache docker "$@"\n'
            "fi\n"
            'exec "$real" "$@"\n'
        )  # fmt: skip
    elif script.kind == PLUGIN:
        assert script.real is not None
        body = (
            f"real={quote(str(script.real))}\n"
            + _disable_check('exec "$real" "$@"')
            + 'case ${1-} in docker-cli-plugin-metadata) exec "$real" "$@" ;; esac\n'
            + _scanner("docker", "    docker:compose) w=compose ;;\n")
            + f'if [ "$w" = go ] && [ -x {python} ]; then  # no Python any more: run unchanged (fail open)\n'
            "  COMPOSECACHE_REAL_COMPOSE=$real COMPOSECACHE_SHIM=plugin\n"
            "  export COMPOSECACHE_REAL_COMPOSE COMPOSECACHE_SHIM\n"
            '  if [ -z "${COMPOSECACHE_REAL_DOCKER-}" ] && [ -n "${DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND-}" ]; then\n'
            "    COMPOSECACHE_REAL_DOCKER=$DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND; export COMPOSECACHE_REAL_DOCKER\n"
            "  fi\n"
            f'  exec {python} -I -m composecache docker "$@"\n'
            "fi\n"
            'exec "$real" "$@"\n'
        )  # fmt: skip
    elif script.compose_v1:
        # Compose v1 builds with `docker build` (COMPOSE_DOCKER_CLI_BUILD=1), which the docker shim
        # handles; its own default is off for `run`, so turn it on unless the user chose.
        assert script.real is not None
        body = (
            f"real={quote(str(script.real))}\n"
            + _disable_check('exec "$real" "$@"')
            + ': "${COMPOSE_DOCKER_CLI_BUILD:=1}"\nexport COMPOSE_DOCKER_CLI_BUILD\n'
            'exec "$real" "$@"\n'
        )  # fmt: skip
    else:
        if script.real is not None:
            run_real = 'exec "$real" "$@"'
            setup = f"real={quote(str(script.real))}\n"
            to_python = "  COMPOSECACHE_REAL_COMPOSE=$real; export COMPOSECACHE_REAL_COMPOSE\n"
        else:  # no standalone docker-compose: behave as `docker compose`
            assert script.docker is not None
            run_real = 'exec "$docker" compose "$@"'
            setup = f"docker={quote(str(script.docker))}\n"
            to_python = "  COMPOSECACHE_REAL_DOCKER=$docker; export COMPOSECACHE_REAL_DOCKER\n"
        body = (
            setup
            + _disable_check(run_real)
            + _scanner("compose", "")
            + f'if [ "$w" = go ] && [ -x {python} ]; then  # no Python any more: run unchanged (fail open)\n'
            + to_python
            + "  COMPOSECACHE_SHIM=compose; export COMPOSECACHE_SHIM\n"
            f'  exec {python} -I -m composecache -- "$@"\n'
            "fi\n"
            f"{run_real}\n"
        )  # fmt: skip
    return "".join(header) + body


def parse_header(text: str) -> dict[str, list[str]]:
    """The `# key: value` lines of a shim's header (kind under the marker's key)."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines()[1:12]:
        if not line.startswith("# "):
            break
        key, sep, value = line[2:].partition(": ")
        if sep:
            fields.setdefault(key, []).append(value)
    return fields
