"""`composecache docker <docker args>`: `docker build` / `docker buildx build` with the shared cache.

arguments -> build flags -> builder probe -> scope -> store reservations ->
rewritten `docker buildx build` -> runner -> publish.

- `docker [globals] build|builder build|image build ...` becomes `docker
  [globals] buildx build ...` where buildx is installed (plus `--load` when the
  builder is not the `docker` driver and the user chose no output), because
  only BuildKit can import and export a local cache.  With DOCKER_BUILDKIT=0
  or without buildx it runs unchanged, with a one-line notice.
- `--cache-from` is added for every scope that exists (pinned by digest),
  `--cache-to` to a private staging directory; the user's own cache flags stay.
- `docker ... compose ...` goes to the compose front-end (composecache.docker.compose_passthrough).
- Every other docker command is replaced by the real docker (exec: no overhead).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from composecache import runner
from composecache.cached_build import CachedBuild, CacheSlot
from composecache.docker import cmdline as docker_args
from composecache.docker import compose_v1
from composecache.docker import scope as docker_scope
from composecache.docker.cmdline import BuildArgs, BuildArgsError, DockerCommand
from composecache.output import Output
from composecache.session import pool as layer_pool
from composecache.session import probe as session_probe
from composecache.session import toolchain
from composecache.session.memo import Memo
from composecache.settings import Settings

# strconv.ParseBool, which the docker CLI uses for DOCKER_BUILDKIT.
GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
NO_EXPORT_CLASSIC = "the docker driver with the classic image store cannot export a cache; import only"


def main(args: list[str], settings: Settings, output: Output) -> int:
    if args[:1] in (["-h"], ["--help"]) and not args[1:]:
        print("Usage: composecache [OPTIONS] docker build|buildx build [ARGS...]\n\n"
              "Run `docker build` / `docker buildx build` with the shared build cache; any other docker\n"
              "command runs unchanged. `composecache docker compose ...` is `composecache ...`.")  # fmt: skip
        return 0
    env = dict(os.environ)
    command = docker_args.classify(args)
    if command.kind == docker_args.COMPOSE:
        from composecache.docker import compose_passthrough as docker_compose

        return docker_compose.run(command, args, settings, output, env)
    docker = toolchain.real_docker(env)
    if not command.is_build or settings.disabled:
        return _passthrough([str(docker), *args], env)
    try:
        build = docker_args.parse_build(command.rest)
    except BuildArgsError as exc:
        if exc.positionals:  # no context at all: docker says so itself
            output.warn(f"could not read the build arguments ({exc}); building without the cache")
        return _passthrough([str(docker), *args], env)
    if build.help or (build.call not in {None, "build"}):
        return _passthrough([str(docker), *args], env)
    probe_env = _probe_env(command, env)
    notice = legacy_builder_notice(command, env, toolchain.buildx_available(probe_env))
    if notice is not None:
        if notice:
            output.info(notice)
        return _passthrough([str(docker), *args], env)
    return build_with_cache(docker, command, build, settings, output, env, probe_env)


def legacy_builder_notice(command: DockerCommand, env: Mapping[str, str], buildx_installed: bool) -> str | None:
    """Why this build must run unchanged: a notice, "" (no notice), or None (it can use the cache)."""
    buildkit = env.get("DOCKER_BUILDKIT")
    if command.kind == docker_args.BUILDX_BUILD:
        return None if buildx_installed else ""  # docker itself says what is missing
    if buildkit in GO_FALSE:
        return ("DOCKER_BUILDKIT=0: the legacy builder cannot import or export a local build cache; "
                "building without the shared cache")  # fmt: skip
    if buildkit is not None and buildkit not in GO_TRUE:
        return ""  # docker rejects the value itself
    if not buildx_installed:
        return ("buildx is not installed: `docker build` uses the legacy builder, which cannot use a local "
                "build cache; building without the shared cache")  # fmt: skip
    return None


def build_with_cache(
    docker: Path,
    command: DockerCommand,
    build: BuildArgs,
    settings: Settings,
    output: Output,
    env: dict[str, str],
    probe_env: Mapping[str, str],
) -> int:
    builder_name = build.builder or command.buildx_builder
    memo = Memo.from_env(probe_env, writable=not settings.dry_run)
    builder, daemon = session_probe.builder_facts(docker, probe_env, memo, command.global_args, builder_name)
    if builder.error:
        # The build itself would fail the same way: let docker say so, unchanged.
        output.debug(f"buildx inspect failed ({builder.error}); running the build unchanged")
        return _passthrough([str(docker), *command.global_args, *command.words, *command.rest], env)
    cwd = Path.cwd()
    service = compose_v1.service_of(build, env, cwd)
    request = docker_scope.request_for(build, env, settings.scope_prefix, cwd, service)
    cached = CachedBuild(settings, output, export=builder.can_export,
                         no_export_reason="" if builder.can_export else NO_EXPORT_CLASSIC)  # fmt: skip
    slot = cached.prepare([request])[request.key]
    load = command.kind == docker_args.PLAIN_BUILD and not build.has_output and builder.driver not in {None, "docker"}
    argv = rewritten_argv(docker, command, slot, load=load)
    quiet = settings.quiet or build.quiet
    if settings.dry_run:
        print(shlex.join(argv), file=sys.stdout)
        cached.finish(summary=not quiet)
        return 0

    def run_build() -> int:  # from the slot each time: a retry drops corrupt imports
        argv = rewritten_argv(docker, command, slot, load=load)
        output.debug(f"running {shlex.join(argv)}")
        return runner.run_foreground(argv, env, on_tick=cached.publish_ready)

    seeder = None
    if builder.driver == "docker" and cached.store is not None:  # COMPOSECACHE_SEED=0: `daemon` says so
        seeder = layer_pool.prepare_daemon(cached.store.layout, cached.imported_digests(), daemon, env, output,
                                          fill=cached.store.writable)  # fmt: skip
    try:
        if "-" in (build.context, build.dockerfile):
            return run_build()  # stdin can be read only once: no second run
        return cached.run_with_recovery(run_build)
    finally:
        cached.finish(summary=not quiet)
        if seeder is not None:
            seeder.release()


def rewritten_argv(docker: Path, command: DockerCommand, slot: CacheSlot, *, load: bool) -> list[str]:
    """`docker [globals] buildx [buildx options] build <our flags> <the user's build args>`."""
    ours = [arg for spec in slot.cache_from for arg in ("--cache-from", spec)]
    if slot.cache_to:
        ours += ["--cache-to", slot.cache_to]
    if load:
        ours.append("--load")
    words = ["buildx", "build"] if command.kind == docker_args.PLAIN_BUILD else command.words
    return [str(docker), *command.global_args, *words, *ours, *command.rest]


def _probe_env(command: DockerCommand, env: Mapping[str, str]) -> dict[str, str]:
    """The environment for finding plugins: `--config DIR` moves the plugin directory too."""
    config = docker_args.global_option(command.global_args, "--config")
    return {**env, "DOCKER_CONFIG": config} if config else dict(env)


def _passthrough(argv: list[str], env: Mapping[str, str]) -> int:
    runner.exec_replace(argv, env)
    return 127  # not reached
