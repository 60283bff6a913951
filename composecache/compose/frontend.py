"""`composecache [OPTIONS] <compose args>`: compose with the shared cache.

arguments -> compose files -> project model (compose config) -> plan -> cache
requests -> the build lifecycle (cached_build.run) with an override file (or
bake) -> publish.  Commands that cannot build go straight to compose (exec: no
overhead).  Any cache problem: one warning line, and compose runs as it would alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from composecache import cached_build, runner
from composecache.cached_build import BuildTool, CachedBuild, CacheRequest
from composecache.compose import cmdline, model_memo, override, project, scopes, versions
from composecache.compose.cmdline import ComposeArgs
from composecache.compose.files import ComposeFiles, find_files
from composecache.errors import ComposecacheError
from composecache.output import Output
from composecache.session import probe as session_probe
from composecache.session import toolchain
from composecache.session.memo import Memo
from composecache.settings import Settings
from composecache.source_identity import SourceIdentity, identify

CONFIG_TIMEOUT_S = 120


def run(args: list[str], settings: Settings, output: Output, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    parsed = cmdline.parse(args)
    compose = _compose_command(env, settings)
    if settings.disabled or (not parsed.can_build and not settings.dry_run):
        return _passthrough(compose, args, env)
    files = _project_files(parsed, env, settings, output)
    if files is None:
        return _unchanged(compose, args, env, settings, dry_run_status=1)
    reader = ProjectReader(parsed, files, compose, env, settings, output)
    model, facts = reader.read()
    if model is None:  # compose cannot read the project: let compose say so, exactly as it would alone
        return _unchanged(compose, args, env, settings, dry_run_status=1)
    plan = _plan(facts.tools, settings, output)
    if plan.strategy == "passthrough":
        return _unchanged(compose, args, env, settings, dry_run_status=0)
    requests, invalid = _requests(model, files, settings, output, reader.identity)
    # Seeding fills dockerd's own content store: for the `docker` driver only (a container builder has its own).
    daemon = facts.daemon if facts.tools is not None and facts.tools.builder.driver == "docker" else None
    if plan.strategy == "bake" and facts.tools is not None:
        from composecache.compose import bake

        assert reader.config_yaml is not None  # bake never uses the memo: compose was asked
        return bake.run(parsed, files, model, requests, plan, facts.tools, settings, output, env,
                        reader.config_yaml, daemon)  # fmt: skip
    tool = OverrideTool(parsed, files, compose, model, plan, reader, output, invalid)
    return cached_build.run(settings, output, requests, tool, env=env, daemon=daemon, export=plan.export,
                            no_export_reason="" if plan.export else "import only",
                            summary=not settings.quiet)  # fmt: skip


# --- the steps, in order ---------------------------------------------------------------------------


def _compose_command(env: Mapping[str, str], settings: Settings) -> list[str]:
    try:
        return toolchain.compose_command(env)
    except ComposecacheError:
        if not settings.dry_run:
            raise
        return ["docker", "compose"]  # only shown: the preview reads the file itself


def _project_files(
    parsed: ComposeArgs, env: Mapping[str, str], settings: Settings, output: Output
) -> ComposeFiles | None:
    """The user's compose files, as compose would find them; None when composecache cannot name them."""
    files = find_files(parsed.files, parsed.project_directory, parsed.env_files, env, Path.cwd())
    if files.files and "-" not in files.files:
        return files
    if files.files:
        output.warn("compose file from stdin: building without the cache")
    if settings.dry_run:
        output.error("no compose file found" if not files.files else "cannot preview a compose file from stdin")
    return None


@dataclass
class ProjectReader:
    """The project model (from the memo, else `compose config`) and the session's facts, asked side by side."""

    parsed: ComposeArgs
    files: ComposeFiles
    compose: list[str]
    env: dict[str, str]
    settings: Settings
    output: Output
    memo: Memo = field(init=False)
    model_key: str | None = field(init=False, default=None)
    config_yaml: str | None = field(init=False, default=None)  # compose config's output, when compose was asked
    identity: runner.Background[SourceIdentity] = field(init=False)

    def __post_init__(self) -> None:
        self.memo = Memo.from_env(self.env, writable=not self.settings.dry_run)
        self.config_argv = self.parsed.config_argv(self.files.files)
        self.identity = runner.Background(identify, self.files.project_dir, self.env)  # git, for a checkout
        if not self.settings.dry_run:  # --dry-run neither recalls nor writes the project memo: no key
            self.model_key = model_memo.project_key(self.compose, self.config_argv, self.files,
                                                    self.parsed.env_files, self.env, Path.cwd())  # fmt: skip

    def read(self) -> tuple[project.ProjectModel | None, session_probe.Facts]:
        probe = runner.Background(session_probe.facts, self.env, self.memo)
        # The preview and bake need the whole model (build sections): only a real override build uses the memo.
        use_memo = not self.settings.dry_run and self.settings.strategy != "bake"
        model = model_memo.recall(self.memo, self.model_key) if use_memo else None
        if model is None:
            model = self.ask_compose()
        facts = probe.result()
        if model is not None and model.remembered:
            self.output.debug("the compose project is unchanged since composecache last read it (memo)")
        if facts.remembered:
            self.output.debug("the tools and the daemon are unchanged since composecache last asked them (memo)")
        return model, facts

    def ask_compose(self) -> project.ProjectModel | None:
        """`compose config` with the user's project flags; the model is remembered for the next run."""
        result = toolchain.safe_capture([*self.compose, *self.config_argv], self.env, CONFIG_TIMEOUT_S)
        model = _load_model(result, self.files, self.settings, self.output)
        if model is not None:
            self.config_yaml = result.stdout
            model_memo.remember(self.memo, self.model_key, model)
        return model


def _plan(tools: toolchain.Toolchain | None, settings: Settings, output: Output) -> versions.Plan:
    plan = versions.plan_for(tools.compose_version if tools else None,
                             tools.builder if tools else toolchain.UNKNOWN_BUILDER, settings.strategy)  # fmt: skip
    for warning in plan.warnings:
        output.warn(warning)
    return plan


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


class OverrideTool(BuildTool):
    """compose itself builds, with an override file that adds the slots' cache_from / cache_to."""

    def __init__(
        self,
        parsed: ComposeArgs,
        files: ComposeFiles,
        compose: list[str],
        model: project.ProjectModel,
        plan: versions.Plan,
        reader: ProjectReader,
        output: Output,
        invalid: bool,
    ) -> None:
        self.parsed, self.files, self.compose, self.model = parsed, files, compose, model
        self.plan, self.reader, self.output, self.invalid = plan, reader, output, invalid
        self.dropped: set[str] = set()  # services a stale remembered project named that compose no longer builds

    def run(self, build: CachedBuild) -> int:
        current = {name: slot for name, slot in build.slots.items() if name not in self.dropped}
        with override.OverrideFile(override.override_document(current)) as override_file:
            argv = [*self.compose, *self.parsed.argv(files=[*self.files.files, str(override_file.path)])]
            self.output.debug(f"running {' '.join(argv)}")
            return runner.run_foreground(argv, {**self.reader.env, **self.plan.env}, on_tick=build.publish_ready)

    def preview(self, build: CachedBuild) -> int:
        from composecache.compose import dryrun

        document = override.override_document(build.slots)
        diffs = []
        for name, service in self.model.services.items():
            if service.build is not None:
                after = dryrun.effective_build(service.build, document["services"].get(name, {}).get("build"))
                diffs.append(dryrun.service_diff(name, service.build, after))
        notes = build.summary_lines()
        if self.model.approximate:
            notes.insert(0, "compose could not be run: the preview read the file without compose and is approximate")
        argv = [*self.compose, *self.parsed.argv(files=[*self.files.files, "<override>"])]
        dryrun.render(self.output, diffs, argv, self.plan.env, notes, document)
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
