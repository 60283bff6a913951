"""`composecache [OPTIONS] <compose args>`: compose with the shared cache.

arguments -> compose files -> project model (compose config, checked against
compose's own discovery: resolve.py) -> plan -> cache requests for the
services this command builds -> the build lifecycle (cached_build.run) with an
override file (or bake) -> publish.  Commands that cannot build go straight to
compose (exec: no overhead).  Any cache problem: one line, and compose runs as
it would alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from composecache import cached_build, runner
from composecache.cached_build import BuildTool, CachedBuild, CacheRequest, CacheSlot
from composecache.compose import cmdline, model_memo, override, project, resolve, scopes, versions
from composecache.compose import files as files_mod
from composecache.compose.cmdline import ComposeArgs
from composecache.errors import ComposecacheError
from composecache.output import Output
from composecache.session import probe as session_probe
from composecache.session import toolchain
from composecache.session.memo import Memo
from composecache.settings import Settings
from composecache.source_identity import SourceIdentity, identify

if TYPE_CHECKING:
    from composecache.session.pool import SnapshotListing


def run(args: list[str], settings: Settings, output: Output, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    parsed = cmdline.parse(args)
    compose = _compose_command(env, settings)
    if settings.disabled or (not parsed.can_build and not settings.dry_run):
        return _passthrough(compose, args, env)
    if not parsed.can_build:  # --dry-run of a command that builds nothing: what really runs
        from composecache.compose import dryrun

        dryrun.render_passthrough([*compose, *args])
        return 0
    reader = ProjectReader(parsed, compose, env, settings, output)
    resolved, facts = reader.read()
    plan = _plan(facts.tools, settings, output, quiet=isinstance(resolved, resolve.NoCache))
    if plan.strategy == "passthrough":  # Compose v1: its builds reach the cache through the docker shim only
        if not (isinstance(resolved, resolve.NoCache) and resolved.said):
            output.fall_back(plan.warnings[0] if plan.warnings else "this Compose cannot use the cache; "
                             "building without it")  # fmt: skip
        return _unchanged(compose, args, env, settings, dry_run_status=0)
    if isinstance(resolved, resolve.NoCache):
        return resolved.status if resolved.status is not None else _passthrough(compose, args, env)
    requests, followers, invalid = _requests(resolved, settings, output, reader.identity)
    # Seeding fills dockerd's own content store: for the `docker` driver only (a container builder has its own).
    daemon = facts.daemon if facts.tools is not None and facts.tools.builder.driver == "docker" else None
    if plan.strategy == "bake" and facts.tools is not None:
        from composecache.compose import bake

        assert resolved.config_yaml is not None  # bake never uses the memo: compose was asked
        return bake.run(parsed, resolved.files, resolved.model, requests, plan, facts.tools, settings, output, env,
                        resolved.config_yaml, daemon, resolved.built)  # fmt: skip
    tool = OverrideTool(parsed, resolved, followers, compose, plan, reader, output, invalid)
    return cached_build.run(settings, output, requests, tool, env=env, daemon=daemon, export=plan.export,
                            no_export_reason="" if plan.export else "import only",
                            summary=not settings.quiet, snapshots=reader.snapshots)  # fmt: skip


# --- the steps, in order ---------------------------------------------------------------------------


def _compose_command(env: Mapping[str, str], settings: Settings) -> list[str]:
    try:
        return toolchain.compose_command(env)
    except ComposecacheError:
        if not settings.dry_run:
            raise
        return ["docker", "compose"]  # only shown: the preview reads the file itself


class ProjectReader:
    """The files, the model for this command (resolve.py) and the session's facts, asked side by side."""

    def __init__(self, parsed: ComposeArgs, compose: list[str], env: dict[str, str], settings: Settings,
                 output: Output) -> None:  # fmt: skip
        self.parsed, self.compose, self.env, self.settings, self.output = parsed, compose, env, settings, output
        self.cwd = files_mod.logical_cwd(env)
        self.memo = Memo.from_env(env, writable=not settings.dry_run)
        self.snapshots: SnapshotListing | None = None
        self.probe = runner.Background(self._facts)
        self.files = resolve.discover(parsed, env, self.cwd, self._compose_version)
        self.identity = runner.Background(identify, self.files.project_dir, env)  # git, for a checkout
        self.resolved: resolve.Resolved | None = None

    def _facts(self) -> session_probe.Facts:
        """The session's facts; once they name the daemon, its snapshot listing starts beside the rest."""
        facts = session_probe.facts(self.env, self.memo)
        if not self.settings.dry_run and facts.tools is not None and facts.tools.builder.driver == "docker":
            from composecache.session import pool as layer_pool

            self.snapshots = layer_pool.start_listing(facts.daemon, self.env)
        return facts

    def _compose_version(self) -> toolchain.Version | None:
        tools = self.probe.result().tools
        return tools.compose_version if tools is not None else None

    def read(self) -> tuple[resolve.Resolved | resolve.NoCache, session_probe.Facts]:
        resolved = resolve.resolve(self.parsed, self.compose, self.env, self.cwd, self.files, self.settings,
                                   self.output, self.memo)  # fmt: skip
        facts = self.probe.result()
        if facts.remembered:
            self.output.debug("the tools and the daemon are unchanged since composecache last asked them (memo)")
        if isinstance(resolved, resolve.Resolved):
            self.resolved = resolved
        return resolved, facts

    def ask_compose(self) -> project.ProjectModel | None:
        """`compose config` for composecache's files again (after a failed build); remembered when read."""
        assert self.resolved is not None
        result = runner.safe_capture([*self.compose, *self.resolved.config_argv],
                                        {**self.env, **self.resolved.own_env}, resolve.CONFIG_TIMEOUT_S)  # fmt: skip
        if result.returncode != 0:
            return None
        try:
            model = project.model_from_config_output(result.stdout)
        except project.ModelError:
            return None
        model_memo.remember(self.memo, self.resolved.model_key, model, self.files.project_dir)
        return model


def _plan(
    tools: toolchain.Toolchain | None, settings: Settings, output: Output, *, quiet: bool = False
) -> versions.Plan:
    """How compose gets the cache; its warnings are printed unless the run goes on without the cache anyway."""
    plan = versions.plan_for(tools.compose_version if tools else None,
                             tools.builder if tools else toolchain.UNKNOWN_BUILDER, settings.strategy)  # fmt: skip
    if plan.strategy != "passthrough" and not quiet:
        for warning in plan.warnings:
            output.warn(warning)
    return plan


def _requests(
    resolved: resolve.Resolved,
    settings: Settings,
    output: Output,
    identity: runner.Background[SourceIdentity],
) -> tuple[list[CacheRequest], dict[str, str], bool]:
    """The cache requests of the services this command builds, the services that only import (they build
    one image one way with another), and whether an x-composecache was invalid."""
    model, files = resolved.model, resolved.files
    requests: dict[str, CacheRequest] = {}  # by scope item: the image's repository, else the service
    followers: dict[str, str] = {}
    invalid = False
    identical = model.shared_builds()  # follower -> the first service with the same image and build
    for name in resolved.built:
        service = model.services[name]
        # A service that names its image is cached under the image's name: the services that build one
        # image share one scope, whichever of them this command loads.
        item = service.image_repository or name
        if item in requests and name in identical:
            followers[name] = requests[item].key
            continue
        service_settings, problems = project.service_settings(service)
        if problems:
            where = project.file_defining(files.files, name, Path.cwd()) or "the compose project"
            message = (f"{where}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
                       + f"; service {name} builds without the cache")  # fmt: skip
            if settings.dry_run:
                output.error(message)
            else:
                output.fall_back(message)
            invalid = True
            continue
        if not service_settings.enabled:
            output.debug(f"{name}: x-composecache.enabled is false: builds without the cache")
            continue
        source = scopes.source_for(identity.result(), service, files.project_dir)
        request = scopes.request_for(item, service_settings, source, settings.scope_prefix)
        requests.setdefault(item, request._replace(key=name))
        if requests[item].key != name:  # same image, another build: its own export to the same scope
            requests[name] = request._replace(key=name)
    return list(requests.values()), followers, invalid


def _with_followers(slots: Mapping[str, CacheSlot], followers: Mapping[str, str]) -> dict[str, CacheSlot]:
    """The slots, plus one per service that builds the same image the same way as another: import only."""
    out = dict(slots)
    for follower, leader in followers.items():
        slot = slots.get(leader)
        if slot is not None:
            out[follower] = CacheSlot(slot.request, cache_from=list(slot.cache_from), extra_from=list(slot.extra_from))
    return out


class OverrideTool(BuildTool):
    """compose itself builds, with an override file that adds the slots' cache_from / cache_to."""

    def __init__(
        self,
        parsed: ComposeArgs,
        resolved: resolve.Resolved,
        followers: dict[str, str],
        compose: list[str],
        plan: versions.Plan,
        reader: ProjectReader,
        output: Output,
        invalid: bool,
    ) -> None:
        self.parsed, self.resolved, self.followers, self.compose = parsed, resolved, followers, compose
        self.plan, self.reader, self.output, self.invalid = plan, reader, output, invalid
        self.model = resolved.model
        self.dropped: set[str] = set()  # services a stale remembered project named that compose no longer builds

    def document(self, build: CachedBuild) -> dict[str, object]:
        current = {name: slot for name, slot in build.slots.items() if name not in self.dropped}
        return override.override_document(_with_followers(current, self.followers))

    def run(self, build: CachedBuild) -> int:
        with override.OverrideFile(self.document(build)) as override_file:
            own_files, own_env = self.resolved.argv_env([str(override_file.path)])
            argv = [*self.compose, *self.parsed.argv(files=own_files)]
            self.output.debug(f"running {' '.join(argv)}" + "".join(f" ({k}={v})" for k, v in own_env.items()))
            child_env = {**self.reader.env, **self.plan.env, **own_env}
            return runner.run_foreground(argv, child_env, on_tick=build.publish_ready)

    def preview(self, build: CachedBuild) -> int:
        from composecache.compose import dryrun

        document = self.document(build)
        services = document["services"]
        assert isinstance(services, dict)
        diffs = []
        for name in self.resolved.built:
            build_section = self.model.services[name].build
            assert build_section is not None
            after = dryrun.effective_build(build_section, services.get(name, {}).get("build"))
            diffs.append(dryrun.service_diff(name, build_section, after))
        notes = [*dryrun.missing_sources(self.model, self.resolved.built, self.output), *build.summary_lines()]
        if self.model.approximate:
            notes.insert(0, "compose could not be run: the preview read the file without compose and is approximate")
        own_files, own_env = self.resolved.argv_env(["<override>"])
        argv = [*self.compose, *self.parsed.argv(files=own_files)]
        dryrun.render(self.output, diffs, argv, {**own_env, **self.plan.env}, notes, document)
        return 1 if self.invalid else 0

    def stale(self, build: CachedBuild) -> bool:
        """After a failed build with a remembered project: was the memo out of date, and did that matter?"""
        if not self.model.remembered:
            return False
        fresh = self.reader.ask_compose()
        if fresh is None:
            return False
        building = model_memo.building(fresh)
        if building == model_memo.building(self.model):
            return False
        gone = {name for name in build.slots if name not in building}
        if not gone:
            return False  # the override was valid for the new project: the failure is not ours
        self.dropped.update(gone)
        self.output.warn("the compose project changed in a way composecache did not notice; running compose again")
        return True


# --- compose unchanged ---------------------------------------------------------------------------


def _unchanged(compose: list[str], args: list[str], env: Mapping[str, str], settings: Settings,
               *, dry_run_status: int) -> int:  # fmt: skip
    """Compose runs as it would alone; a --dry-run stops here instead, with `dry_run_status`."""
    return dry_run_status if settings.dry_run else _passthrough(compose, args, env)


def _passthrough(compose: list[str], args: list[str], env: Mapping[str, str]) -> int:
    runner.exec_replace([*compose, *args], env)
    return 127  # not reached
