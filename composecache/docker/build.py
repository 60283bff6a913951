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

from composecache import cached_build, runner
from composecache.cached_build import BuildTool, CachedBuild, CacheSlot
from composecache.docker import cmdline as docker_args
from composecache.docker import compose_v1
from composecache.docker import scope as docker_scope
from composecache.docker.cmdline import BuildArgs, BuildArgsError, DockerCommand
from composecache.output import Output
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
    load = command.kind == docker_args.PLAIN_BUILD and not build.has_output and builder.driver not in {None, "docker"}
    quiet = settings.quiet or build.quiet
    tool = DockerBuildTool(docker, command, env, output, key=request.key, load=load, quiet=quiet)
    tool.may_run_again = "-" not in (build.context, build.dockerfile)  # stdin can be read only once
    # Seeding fills dockerd's own content store: the `docker` driver only (COMPOSECACHE_SEED=0: `daemon` says so).
    return cached_build.run(settings, output, [request], tool, env=env,
                            daemon=daemon if builder.driver == "docker" else None, export=builder.can_export,
                            no_export_reason="" if builder.can_export else NO_EXPORT_CLASSIC,
                            summary=not quiet)  # fmt: skip


class DockerBuildTool(BuildTool):
    """`docker buildx build` with the slot's --cache-from / --cache-to before the user's own arguments."""

    def __init__(self, docker: Path, command: DockerCommand, env: dict[str, str], output: Output, *, key: str,
                 load: bool, quiet: bool) -> None:  # fmt: skip
        self.docker, self.command, self.env, self.output = docker, command, env, output
        self.key, self.load, self.quiet = key, load, quiet

    def _argv(self, build: CachedBuild) -> list[str]:
        return rewritten_argv(self.docker, self.command, build.slots[self.key], load=self.load)

    def run(self, build: CachedBuild) -> int:
        argv = self._argv(build)
        self.output.debug(f"running {shlex.join(argv)}")
        return runner.run_foreground(argv, self.env, on_tick=build.publish_ready)

    def preview(self, build: CachedBuild) -> int:
        print(shlex.join(self._argv(build)), file=sys.stdout)
        if not self.quiet:
            for line in build.summary_lines():
                self.output.info(line)
        return 0


def rewritten_argv(docker: Path, command: DockerCommand, slot: CacheSlot, *, load: bool) -> list[str]:
    """`docker [globals] buildx [buildx options] build <our flags> <the user's build args>`."""
    ours = [arg for spec in slot.cache_from_entries for arg in ("--cache-from", spec)]
    ours += [arg for spec in slot.cache_to_entries for arg in ("--cache-to", spec)]
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
