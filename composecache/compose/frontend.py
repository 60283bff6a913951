"""`composecache [OPTIONS] <compose args>`: compose with the shared cache.

arguments -> compose files -> project model (compose config) -> scopes ->
store reservations -> override file -> compose runs -> publish.  Commands
that cannot build go straight to compose (exec: no overhead).  Any cache
problem: one warning line, and compose runs as it would alone.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from composecache import runner
from composecache.cached_build import CachedBuild, CacheRequest, CacheSlot
from composecache.compose import cmdline, model_memo, override, project, resolve, scopes, versions
from composecache.compose import files as files_mod
from composecache.compose.files import ComposeFiles
from composecache.errors import ComposecacheError
from composecache.output import Output
from composecache.session import probe as session_probe
from composecache.session import seeding, toolchain
from composecache.session.memo import Memo
from composecache.settings import Settings
from composecache.source_identity import SourceIdentity, identify


def run(args: list[str], settings: Settings, output: Output, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    parsed = cmdline.parse(args)
    try:
        compose = toolchain.compose_command(env)
    except ComposecacheError:
        if not settings.dry_run:
            raise
        compose = ["docker", "compose"]  # only shown: the preview reads the file itself
    if settings.disabled or (not parsed.can_build and not settings.dry_run):
        return _passthrough(compose, args, env)
    if not parsed.can_build:  # --dry-run of a command that builds nothing: what really runs
        from composecache.compose import dryrun

        dryrun.render_passthrough([*compose, *args])
        return 0
    cwd = files_mod.logical_cwd(env)
    memo = Memo.from_env(env, writable=not settings.dry_run)
    probe = runner.Background(session_probe.facts, env, memo)

    def compose_version() -> toolchain.Version | None:
        tools = probe.result().tools
        return tools.compose_version if tools is not None else None

    files = resolve.discover(parsed, env, cwd, compose_version)
    identity = runner.Background(identify, files.project_dir, env)  # git, when the project is a checkout
    resolved = resolve.resolve(parsed, compose, env, cwd, files, settings, output, memo)
    if isinstance(resolved, resolve.NoCache):
        if resolved.status is not None:
            return resolved.status
        return _passthrough(compose, args, env)
    model = resolved.model
    model_key = resolved.model_key
    config_argv = resolved.config_argv
    facts = probe.result()
    tools = facts.tools
    if facts.remembered:
        output.debug("the tools and the daemon are unchanged since composecache last asked them (memo)")

    plan = versions.plan_for(tools.compose_version if tools else None,
                             tools.builder if tools else toolchain.UNKNOWN_BUILDER, settings.strategy)  # fmt: skip
    if plan.strategy == "passthrough":
        output.fall_back(plan.warnings[0] if plan.warnings else "this Compose cannot use the cache; building without")
        return 0 if settings.dry_run else _passthrough(compose, args, env)
    for warning in plan.warnings:
        output.warn(warning)

    requests, followers, invalid = _requests(model, resolved.built, files, settings, output, identity)
    if plan.strategy == "bake" and tools is not None:
        from composecache.compose import bake

        assert resolved.config_yaml is not None
        return bake.run(parsed, files, model, requests, plan, tools, settings, output, env, resolved.config_yaml,
                        resolved.built)  # fmt: skip

    build = CachedBuild(settings, output, export=plan.export,
                        no_export_reason="" if plan.export else "import only")  # fmt: skip
    slots = build.prepare(requests)
    document = override.override_document(_with_followers(slots, followers))
    problems = override.validate(document)
    if problems:  # our own bug: never let it reach compose
        output.fall_back("generated override is invalid (" + "; ".join(problems) + "); building without the cache")
        build.finish(summary=False)
        return 1 if settings.dry_run else _passthrough(compose, args, env)

    if settings.dry_run:
        from composecache.compose import dryrun

        diffs = []
        for name in resolved.built:
            service = model.services[name]
            assert service.build is not None
            after = dryrun.effective_build(service.build, document["services"].get(name, {}).get("build"))
            diffs.append(dryrun.service_diff(name, service.build, after))
        notes = [*dryrun.missing_sources(model, resolved.built, output), *build.summary_lines()]
        if model.approximate:
            notes.insert(0, "compose could not be run: the preview read the file without compose and is approximate")
        own_files, own_env = resolved.argv_env(["<override>"])
        argv = [*compose, *parsed.argv(files=own_files)]
        dryrun.render(output, diffs, argv, {**own_env, **plan.env}, notes, document)
        return 1 if invalid else 0

    dropped: set[str] = set()  # services a stale remembered project named that compose no longer builds

    def run_compose() -> int:  # the override is made from the slots each time (a retry drops imports)
        current = {name: slot for name, slot in slots.items() if name not in dropped}
        document = override.override_document(_with_followers(current, followers))
        with override.OverrideFile(document) as override_file:
            own_files, own_env = resolved.argv_env([str(override_file.path)])
            argv = [*compose, *parsed.argv(files=own_files)]
            output.debug(f"running {' '.join(argv)}" + "".join(f" ({k}={v})" for k, v in own_env.items()))
            return runner.run_foreground(argv, {**env, **plan.env, **own_env}, on_tick=build.publish_ready)

    layout = build.store.layout if build.store is not None else None

    def stale() -> bool:
        """After a failed build with a remembered project: was the memo out of date, and did that matter?"""
        if not model.remembered:
            return False
        result = toolchain.safe_capture([*compose, *config_argv], {**env, **resolved.own_env}, 120)
        if result.returncode != 0:
            return False
        try:
            fresh = project.model_from_config_output(result.stdout)
        except project.ModelError:
            return False
        building = model_memo.building(fresh)
        if building == model_memo.building(model):
            return False
        model_memo.remember(memo, model_key, fresh, files.project_dir)
        gone = {name for name in slots if name not in building}
        if not gone:
            return False  # the override was valid for the new project: the failure is not ours
        dropped.update(gone)
        output.warn("the compose project changed in a way composecache did not notice; running compose again")
        return True

    # Seeding fills dockerd's own content store: for the `docker` driver only (a container builder has its own).
    # (COMPOSECACHE_SEED=0: facts.daemon says so, and seed_imports does nothing.)
    driver = tools.builder.driver if tools is not None else None
    daemon = facts.daemon if driver == "docker" else None
    seeder = seeding.seed_imports(layout, build.imported_digests(), daemon, env, output)
    try:
        return build.run_with_recovery(run_compose, stale)
    finally:
        build.finish(summary=not settings.quiet)
        if seeder is not None:
            seeder.release()


def _passthrough(compose: list[str], args: list[str], env: Mapping[str, str]) -> int:
    runner.exec_replace([*compose, *args], env)
    return 127  # not reached


def _with_followers(slots: Mapping[str, CacheSlot], followers: Mapping[str, str]) -> dict[str, CacheSlot]:
    """The slots, plus one per service that shares its image and build with another: import only."""
    out = dict(slots)
    for follower, leader in followers.items():
        slot = slots.get(leader)
        if slot is not None:
            out[follower] = CacheSlot(slot.request, cache_from=list(slot.cache_from))
    return out


def _requests(
    model: project.ProjectModel,
    built: list[str],
    files: ComposeFiles,
    settings: Settings,
    output: Output,
    identity: runner.Background[SourceIdentity],
) -> tuple[list[CacheRequest], dict[str, str], bool]:
    """The cache requests of the services this command builds, the followers of shared builds, and
    whether an x-composecache was invalid."""
    requests: dict[str, CacheRequest] = {}  # by scope item: the image's repository, else the service
    followers: dict[str, str] = {}
    invalid = False
    identical = model.shared_builds()  # follower -> the first service with the same image and build
    for name in built:
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
        requests.setdefault(item, dataclasses.replace(request, key=name))
        if requests[item].key != name:  # same image, another build: its own export to the same scope
            requests[name] = dataclasses.replace(request, key=name)
    return list(requests.values()), followers, invalid
