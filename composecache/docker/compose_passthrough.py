"""`docker [globals] compose ...` through composecache (the docker shim and the compose plugin shim).

The docker CLI would start the compose plugin itself and hand it its global
options (`docker -H x compose up` runs `docker-compose -H x compose up`).
composecache starts compose itself, so the global options become their
environment equivalents (-H -> DOCKER_HOST, --context -> DOCKER_CONTEXT,
--config -> DOCKER_CONFIG, --tlsverify -> DOCKER_TLS_VERIFY) and the compose
arguments go to the compose front-end.  An option without an equivalent (-D,
-l, --tls, --tlscacert, ...) means: run unchanged, with a one-line notice.

Called from the plugin shim (COMPOSECACHE_SHIM=plugin), "unchanged" is the
real plugin with the plugin's own arguments; it must never be the docker CLI
again, which would start the plugin shim again.
"""

from __future__ import annotations

from collections.abc import Mapping

from composecache import runner
from composecache.docker import cmdline as docker_args
from composecache.docker.cmdline import DockerCommand
from composecache.output import Output
from composecache.session import toolchain
from composecache.settings import Settings

# Set by the docker CLI for the plugin it starts; the real plugin run standalone must not see them.
PLUGIN_ENV = ("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND", "DOCKER_CLI_PLUGIN_SOCKET")
SHIM_ENV = "COMPOSECACHE_SHIM"
HELP_OR_VERSION = {"-h", "--help", "-v", "--version"}


def run(command: DockerCommand, args: list[str], settings: Settings, output: Output, env: dict[str, str]) -> int:
    if settings.disabled or HELP_OR_VERSION.intersection(command.global_args):
        return passthrough(args, env)
    changes = docker_args.global_options_env(command.global_args)
    if changes is None:
        output.info(f"docker option {' '.join(command.global_args)} has no environment equivalent for compose: "
                    "running compose without the shared cache")  # fmt: skip
        return passthrough(args, env)
    child_env = docker_args.apply_env(env, changes)
    if not env.get("COMPOSECACHE_REAL_COMPOSE") and toolchain.find_plugin("compose", child_env) is None:
        return passthrough(args, env)  # no compose plugin: docker says so, as it would without us
    for name in (*PLUGIN_ENV, SHIM_ENV):
        child_env.pop(name, None)
    from composecache.compose import frontend

    return frontend.run(command.rest, settings, output, env=child_env)


def passthrough(args: list[str], env: Mapping[str, str]) -> int:
    """Run `docker <args>` unchanged (from the plugin shim: the real plugin, with the plugin's arguments)."""
    real_compose = env.get("COMPOSECACHE_REAL_COMPOSE")
    if env.get(SHIM_ENV) == "plugin" and real_compose:
        runner.exec_replace([real_compose, *args], env)
        return 127  # not reached
    # COMPOSECACHE_DISABLE: a compose plugin shim the docker CLI may start must not bring us back here.
    runner.exec_replace([str(toolchain.real_docker(env)), *args], {**env, "COMPOSECACHE_DISABLE": "1"})
    return 127  # not reached
