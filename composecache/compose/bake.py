"""`--strategy bake`: build with `docker buildx bake --set`, then run compose with --no-build.

`--set` is bake's, not compose's: bake reads compose's own resolved model
(`docker compose config`, written to a private short-lived file since it may
hold values from env files), gets `<service>.cache-from` / `.cache-to` /
`.tags` per service, loads the images into the session daemon under the names
compose would give them (the service's `image`, else `<project>-<service>`),
and compose then runs with `--no-build`, so it builds nothing itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from composecache import cached_build, runner
from composecache.cached_build import BuildTool, CachedBuild, CacheRequest
from composecache.compose.cmdline import ComposeArgs
from composecache.compose.files import ComposeFiles
from composecache.compose.override import OverrideFile
from composecache.compose.project import ProjectModel
from composecache.compose.versions import Plan
from composecache.output import Output
from composecache.session.seeding import DaemonStore
from composecache.session.toolchain import Toolchain, Version, parse_version
from composecache.settings import Settings

# buildx enforces filesystem entitlements for bake from 0.20 on.
FS_ENTITLEMENTS_SINCE = Version("0.20.0")
BUILD_FLAGS = {"--build", "--build=true"}


def image_name(model: ProjectModel, service: str) -> str:
    image = model.services[service].image
    return image if image else f"{model.name}-{service}"


def bake_target(service: str) -> str:
    """The bake target bake makes of a compose service: `.` becomes `_` (buildx 0.13.1 and 0.29.1).

    `--set web.v2.tags=...` would name target `web`; a service `..` would be target `` (measured).
    """
    return service.replace(".", "_")


def set_flags(model: ProjectModel, build: CachedBuild, services: list[str]) -> list[str]:
    flags = []
    for service in services:
        own_from = list((model.services[service].build or {}).get("cache_from") or [])
        own_to = list((model.services[service].build or {}).get("cache_to") or [])
        slot = build.slots.get(service)
        cache_from = own_from + (slot.cache_from_entries if slot else [])
        cache_to = own_to + (slot.cache_to_entries if slot else [])
        target = bake_target(service)
        flags += ["--set", f"{target}.tags={image_name(model, service)}"]
        # Repeating --set for a list key appends to it (buildx parseOverrides).
        flags += [arg for spec in cache_from for arg in ("--set", f"{target}.cache-from={spec}")]
        flags += [arg for spec in cache_to for arg in ("--set", f"{target}.cache-to={spec}")]
    return flags


def run(
    parsed: ComposeArgs,
    files: ComposeFiles,
    model: ProjectModel,
    requests: list[CacheRequest],
    plan: Plan,
    tools: Toolchain,
    settings: Settings,
    output: Output,
    env: Mapping[str, str],
    config_yaml: str,
    daemon: DaemonStore | str | None = None,
    built: list[str] | None = None,
) -> int:
    """Bake builds the services through the shared build lifecycle; then compose runs with --no-build."""
    compose = tools.compose
    if parsed.subcommand == "watch":
        output.fall_back("--strategy bake cannot serve `watch` (it rebuilds by itself); running compose without "
                         "the cache")  # fmt: skip
        runner.exec_replace([*compose, *parsed.argv()], env)
    # The services this command builds (compose's model for `config SERVICE...`, the command's rule).
    services = list(built) if built is not None else [name for name, svc in model.services.items() if svc.builds]
    with OverrideFile({}) as private:
        model_file = private.directory / "model.yaml"
        fd = os.open(model_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(config_yaml)
        tool = BakeTool(tools, model, services, model_file, _entitlements(tools, settings, env), env, files.project_dir)
        status = cached_build.run(settings, output, [request for request in requests if request.key in services],
                                  tool, env=env, daemon=daemon, export=plan.export,
                                  no_export_reason="" if plan.export else "import only",
                                  summary=not settings.quiet)  # fmt: skip
    if settings.dry_run or status != 0 or parsed.subcommand == "build":
        return status
    sub_args = [arg for arg in parsed.sub_args if arg not in BUILD_FLAGS]
    if "--no-build" not in sub_args:
        sub_args.insert(0, "--no-build")
    return runner.run_foreground([*compose, *parsed.argv(subcommand_args=sub_args)], {**env, **plan.env})


class BakeTool(BuildTool):
    """`docker buildx bake -f <compose's resolved model> --set <service>.cache-from/cache-to/tags ... --load`."""

    def __init__(self, tools: Toolchain, model: ProjectModel, services: list[str], model_file: Path,
                 entitlements: list[str], env: Mapping[str, str], cwd: Path) -> None:  # fmt: skip
        self.tools, self.model, self.services, self.model_file = tools, model, services, model_file
        self.entitlements, self.env, self.cwd = entitlements, env, cwd

    def argv(self, build: CachedBuild) -> list[str]:
        """From the slots each time: a retry drops corrupt imports."""
        # `--` before the targets: a service may be named `-x` or `--print`.
        return [str(self.tools.docker), "buildx", "bake", "-f", str(self.model_file), "--load",
                *set_flags(self.model, build, self.services), *self.entitlements, "--",
                *map(bake_target, self.services)]  # fmt: skip

    def run(self, build: CachedBuild) -> int:
        return runner.run_foreground(self.argv(build), self.env, on_tick=build.publish_ready, cwd=self.cwd)

    def preview(self, build: CachedBuild) -> int:
        print(" ".join(self.argv(build)))
        return 0


def _entitlements(tools: Toolchain, settings: Settings, env: Mapping[str, str]) -> list[str]:
    version = parse_version(runner.safe_capture([str(tools.docker), "buildx", "version"], env).stdout)
    if version is None or version < FS_ENTITLEMENTS_SINCE:
        return []
    root = str(Path(os.path.abspath(settings.cache_dir)))
    return ["--allow", f"fs.read={root}", "--allow", f"fs.write={root}"]
