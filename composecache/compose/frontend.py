"""`composecache [OPTIONS] <compose args>`: compose with the shared cache.

arguments -> compose files -> project model (compose config) -> scopes ->
store reservations -> override file -> compose runs -> publish.  Commands
that cannot build go straight to compose (exec: no overhead).  Any cache
problem: one warning line, and compose runs as it would alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from composecache import runner
from composecache.cached_build import CachedBuild, CacheRequest
from composecache.compose import cmdline, model_memo, override, project, scopes, versions
from composecache.compose.files import ComposeFiles, find_files
from composecache.errors import ComposecacheError
from composecache.output import Output
from composecache.session import pool as layer_pool
from composecache.session import probe as session_probe
from composecache.session import toolchain
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
    cwd = Path.cwd()
    files = find_files(parsed.files, parsed.project_directory, parsed.env_files, env, cwd)
    if not files.files or "-" in files.files:
        if files.files:
            output.warn("compose file from stdin: building without the cache")
        if settings.dry_run:
            output.error("no compose file found" if not files.files else "cannot preview a compose file from stdin")
            return 1
        return _passthrough(compose, args, env)

    memo = Memo.from_env(env, writable=not settings.dry_run)
    probe = runner.Background(session_probe.facts, env, memo)
    identity = runner.Background(identify, files.project_dir, env)  # git, when the project is a checkout
    config_argv = parsed.config_argv(files.files)
    # --dry-run neither recalls nor writes the project memo: no key to compute.
    model_key = None if settings.dry_run else model_memo.project_key(compose, config_argv, files,
                                                                      parsed.env_files, env, cwd)  # fmt: skip
    # The preview and bake need the whole model (build sections): only a real override build uses the memo.
    model = None if settings.dry_run or settings.strategy == "bake" else model_memo.recall(memo, model_key)
    config_result = None
    if model is None:
        config_result = toolchain.safe_capture([*compose, *config_argv], env, 120)
        model = _load_model(config_result, files, settings, output)
        if model is not None:
            model_memo.remember(memo, model_key, model)
    facts = probe.result()
    tools = facts.tools
    if model is None:
        # compose cannot read the project: let compose say so, exactly as it would alone.
        return 1 if settings.dry_run else _passthrough(compose, args, env)
    if model.remembered:
        output.debug("the compose project is unchanged since composecache last read it (memo)")
    if facts.remembered:
        output.debug("the tools and the daemon are unchanged since composecache last asked them (memo)")

    plan = versions.plan_for(tools.compose_version if tools else None,
                             tools.builder if tools else toolchain.UNKNOWN_BUILDER, settings.strategy)  # fmt: skip
    for warning in plan.warnings:
        output.warn(warning)
    if plan.strategy == "passthrough":
        return 0 if settings.dry_run else _passthrough(compose, args, env)

    requests, invalid = _requests(model, files, settings, output, identity)
    if plan.strategy == "bake" and tools is not None:
        from composecache.compose import bake

        assert config_result is not None
        return bake.run(parsed, files, model, requests, plan, tools, settings, output, env, config_result.stdout)

    build = CachedBuild(settings, output, export=plan.export,
                        no_export_reason="" if plan.export else "import only")  # fmt: skip
    slots = build.prepare(requests)
    document = override.override_document(slots)
    problems = override.validate(document)
    if problems:  # our own bug: never let it reach compose
        output.warn("generated override is invalid (" + "; ".join(problems) + "); building without the cache")
        build.finish(summary=False)
        return 1 if settings.dry_run else _passthrough(compose, args, env)

    if settings.dry_run:
        from composecache.compose import dryrun

        diffs = []
        for name, service in model.services.items():
            if service.build is not None:
                after = dryrun.effective_build(service.build, document["services"].get(name, {}).get("build"))
                diffs.append(dryrun.service_diff(name, service.build, after))
        notes = build.summary_lines()
        if model.approximate:
            notes.insert(0, "compose could not be run: the preview read the file without compose and is approximate")
        argv = [*compose, *parsed.argv(files=[*files.files, "<override>"])]
        dryrun.render(output, diffs, argv, plan.env, notes, document)
        return 1 if invalid else 0

    child_env = {**env, **plan.env}

    dropped: set[str] = set()  # services a stale remembered project named that compose no longer builds

    def run_compose() -> int:  # the override is made from the slots each time (a retry drops imports)
        current = {name: slot for name, slot in slots.items() if name not in dropped}
        with override.OverrideFile(override.override_document(current)) as override_file:
            argv = [*compose, *parsed.argv(files=[*files.files, str(override_file.path)])]
            output.debug(f"running {' '.join(argv)}")
            return runner.run_foreground(argv, child_env, on_tick=build.publish_ready)

    layout = build.store.layout if build.store is not None else None

    def stale() -> bool:
        """After a failed build with a remembered project: was the memo out of date, and did that matter?"""
        if not model.remembered:
            return False
        result = toolchain.safe_capture([*compose, *config_argv], env, 120)
        fresh = _load_model(result, files, settings, output)
        if fresh is None:
            return False
        building = model_memo.building(fresh)
        if building == model_memo.building(model):
            return False
        model_memo.remember(memo, model_key, fresh)
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
    fill = build.store is not None and build.store.writable
    seeder = layer_pool.prepare_daemon(layout, build.imported_digests(), daemon, env, output, fill=fill)
    try:
        return build.run_with_recovery(run_compose, stale)
    finally:
        build.finish(summary=not settings.quiet)
        if seeder is not None:
            seeder.release()


def _passthrough(compose: list[str], args: list[str], env: Mapping[str, str]) -> int:
    runner.exec_replace([*compose, *args], env)
    return 127  # not reached


def _load_model(
    result: runner.Captured | None, files: ComposeFiles, settings: Settings, output: Output
) -> project.ProjectModel | None:
    if result is not None and result.returncode == 0:
        try:
            return project.model_from_config_output(result.stdout)
        except project.ModelError as exc:
            output.warn(f"could not read `compose config` output ({exc.message}); building without the cache")
            return None
    if not settings.dry_run:
        return None
    message = (result.stderr.strip() if result is not None else "") or "compose config failed"
    if len(files.files) == 1 and result is not None and result.returncode == 127:
        try:
            return project.model_from_file(Path(files.files[0]))
        except project.ModelError as exc:
            output.error(exc.message)
            return None
    output.error(message)
    return None


def _requests(
    model: project.ProjectModel,
    files: ComposeFiles,
    settings: Settings,
    output: Output,
    identity: runner.Background[SourceIdentity],
) -> tuple[list[CacheRequest], bool]:
    """The cache requests of the services that build; and whether an x-composecache was invalid."""
    requests = []
    invalid = False
    for name, service in model.services.items():
        if not service.builds:
            continue
        service_settings, problems = project.service_settings(service)
        if problems:
            where = project.file_defining(files.files, name, Path.cwd()) or "the compose project"
            level = output.error if settings.dry_run else output.warn
            level(f"{where}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
                  + f"; service {name} builds without the cache")  # fmt: skip
            invalid = True
            continue
        if not service_settings.enabled:
            continue
        requests.append(scopes.request_for(name, service_settings, identity.result(), settings.scope_prefix))
    return requests, invalid
