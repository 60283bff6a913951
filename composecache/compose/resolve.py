"""The project this command builds, from exactly compose's files: asked of compose, checked against it.

1. The files (files.py): `-f` as given; otherwise the list compose finds itself
   (COMPOSE_FILE, env files, the upward search), handed to compose through
   COMPOSE_FILE so it reads its env files as for the user's own invocation.
2. The model: `compose <the user's project flags> config [SERVICE...]`, which
   loads the project exactly as the command does (the named services with
   their profiles switched on, their dependencies, --profile, COMPOSE_PROFILES).
3. The self-check, where composecache found the files itself: the model of the
   user's own invocation (compose's discovery) and the model for composecache's
   list must be the same.  Both `config` calls run in parallel; the verdict is
   remembered in the session memo, keyed by everything discovery read (the env
   files, the directories searched, the files found, the variables, the flags,
   the compose binary), so the next build asks nothing.  A mismatch is one
   line (Output.fall_back) and compose runs as it would alone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from composecache import runner
from composecache.compose import cmdline, files, model_memo, project
from composecache.compose.files import ComposeFiles
from composecache.output import Output
from composecache.session import toolchain
from composecache.session.memo import Memo, fingerprint
from composecache.session.memo import stamp as file_stamp
from composecache.settings import Settings

VERDICT_KIND = "discovery"
VERDICT_FORMAT = 1
CONFIG_TIMEOUT_S = 120
TIMED_OUT = 124  # runner.safe_capture: 124 no answer in time, 126 not executable, 127 not found


class Resolved(NamedTuple):
    """What the build path needs: the files, how to hand them to compose, the model."""

    files: ComposeFiles
    own_files: list[str]  # the -f list for compose (before our override)
    own_env: dict[str, str]  # the variables that hand compose the list (COMPOSE_FILE, ...)
    config_argv: list[str]
    model: project.ProjectModel
    model_key: str | None
    config_yaml: str | None  # compose's own YAML, when it was asked (bake needs it)
    built: list[str]  # the services this command may build, in model order

    def argv_env(self, extra_files: list[str]) -> tuple[list[str], dict[str, str]]:
        """(-f list, variables) that give compose the user's files plus `extra_files`."""
        return files.invocation(self.files, extra_files)


class NoCache(NamedTuple):
    """The run goes to compose without composecache; `status` for a dry run (None: run compose).

    `said`: the one line that says why has been printed (Output.fall_back)."""

    status: int | None = None
    said: bool = False


def discover(parsed: cmdline.ComposeArgs, env: Mapping[str, str], cwd: Path,
             version: Any) -> ComposeFiles:  # fmt: skip
    """The files for this command line; `version` is a callable giving compose's version (asked only if it matters)."""

    def find(v: toolchain.Version | None) -> ComposeFiles:
        return files.find_files(parsed.files, parsed.project_directory, parsed.env_files, env, cwd,
                                workdir=parsed.workdir, version=v)  # fmt: skip

    answers = {generation: find(sample) for generation, sample in files.SAMPLES.items()}
    first = next(iter(answers.values()))
    if all(_same(first, answer) for answer in answers.values()):
        return first
    return find(version())


def _same(a: ComposeFiles, b: ComposeFiles) -> bool:
    return (a.files, a.project_dir, a.origin, a.extra_env, a.error) == (b.files, b.project_dir, b.origin,
                                                                         b.extra_env, b.error)  # fmt: skip


def verdict_key(compose: list[str], user_argv: list[str], found: ComposeFiles, env: Mapping[str, str],
                cwd: Path) -> str:  # fmt: skip
    """Everything compose's discovery depends on (a new file in a searched directory changes its stamp)."""
    inputs = []
    for path in sorted(set(found.inputs) | set(found.files)):
        if os.path.isdir(path):
            inputs.append((path, "dir", file_stamp(path)))
            continue
        try:
            with open(path, "rb") as handle:
                inputs.append((path, "file", hashlib.sha256(handle.read(model_memo.MAX_FILE_BYTES)).hexdigest()))
        except OSError:
            inputs.append((path, "missing", file_stamp(path)))
    variables = sorted((k, v) for k, v in env.items() if k.startswith("COMPOSE_") or k == "PWD")
    plugin = toolchain.find_plugin("compose", env)
    return fingerprint(VERDICT_FORMAT, compose, file_stamp(compose[0]), str(plugin),
                       file_stamp(plugin) if plugin else "-", str(cwd), user_argv, inputs, variables)  # fmt: skip


def resolve(
    parsed: cmdline.ComposeArgs,
    compose: list[str],
    env: Mapping[str, str],
    cwd: Path,
    found: ComposeFiles,
    settings: Settings,
    output: Output,
    memo: Memo,
) -> Resolved | NoCache:
    user_argv = parsed.config_argv(parsed.files)
    if not found.files:
        return _nothing_found(compose, user_argv, env, found, settings, output)
    if "-" in found.files:
        output.fall_back("the compose file comes from stdin, which composecache cannot read twice; "
                         "building without the cache")  # fmt: skip
        return NoCache(1 if settings.dry_run else None, said=True)
    own_files, own_env = files.invocation(found, [])
    ours_env = {**env, **own_env}
    config_argv = parsed.config_argv(own_files)
    dkey = verdict_key(compose, user_argv, found, env, cwd) if found.imitated else None
    verdict = memo.get(VERDICT_KIND, dkey) if dkey is not None else None
    if isinstance(verdict, str) and verdict != "ok":
        output.debug("the self-check verdict is remembered (memo)")
        output.fall_back(verdict)
        return NoCache(1 if settings.dry_run else None, said=True)
    check = dkey is not None and verdict != "ok"
    model_key = None
    model = None
    if not settings.dry_run:
        model_key = model_memo.project_key(compose, config_argv, found, parsed.env_files, ours_env, cwd)
        if settings.strategy != "bake" and not check:
            model = model_memo.recall(memo, model_key)
    config_yaml = None
    if model is not None:
        output.debug("the compose project is unchanged since composecache last read it (memo)")
    else:
        asked = Asking(compose, env, ours_env, settings, output, found).ask(config_argv, user_argv if check else None)
        if isinstance(asked, NoCache):
            return asked
        model, config_yaml, mismatch, lasting = asked
        if dkey is not None and check and lasting:  # a time-out is not remembered
            memo.put(VERDICT_KIND, dkey, mismatch or "ok")
        if mismatch:
            output.fall_back(mismatch)
            return NoCache(1 if settings.dry_run else None, said=True)
        model_memo.remember(memo, model_key, model, found.project_dir)
    building = [name for name, service in model.services.items() if service.builds]
    return Resolved(found, own_files, own_env, config_argv, model, model_key, config_yaml,
                    parsed.built_services(building))  # fmt: skip


class Asking(NamedTuple):
    """`compose config` for composecache's files and, for the self-check, for the user's own invocation."""

    compose: list[str]
    env: Mapping[str, str]
    ours_env: Mapping[str, str]
    settings: Settings
    output: Output
    found: ComposeFiles

    def ask(self, config_argv: list[str], user_argv: list[str] | None,
            ) -> tuple[project.ProjectModel, str | None, str | None, bool] | NoCache:  # fmt: skip
        """(model, compose's YAML, the self-check's mismatch or None, whether the verdict lasts), or NoCache."""
        user = None
        if user_argv is not None:  # compose's own discovery, in parallel with ours
            user = runner.Background(runner.safe_capture, [*self.compose, *user_argv], self.env, CONFIG_TIMEOUT_S)
        ours = runner.safe_capture([*self.compose, *config_argv], self.ours_env, CONFIG_TIMEOUT_S)
        mismatch = None
        if user is not None:
            user_result = user.result()
            if user_result.returncode != 0 and not (user_result.returncode == 127 and self.settings.dry_run):
                return _compose_cannot_read(user_result, self.settings, self.output)
            if user_result.returncode == 0:
                mismatch = self_check(user_result.stdout, ours)
        lasting = user is not None and ours.returncode < TIMED_OUT
        if mismatch is not None:
            return project.ProjectModel(None, {}), None, mismatch, lasting
        if ours.returncode != 0:
            return self.without_compose(ours)
        try:
            model = project.model_from_config_output(ours.stdout)
        except project.ModelError as exc:
            self.output.fall_back(f"could not read `compose config` output ({exc.message}); building without the cache")
            return NoCache(1 if self.settings.dry_run else None, said=True)
        return model, ours.stdout, None, lasting

    def without_compose(self, ours: runner.Captured) -> tuple[project.ProjectModel, None, None, bool] | NoCache:
        """Compose could not be asked: a dry run previews a single file as written; else compose says why."""
        if not (self.settings.dry_run and ours.returncode == 127 and len(self.found.files) == 1):
            return _compose_cannot_read(ours, self.settings, self.output)
        try:  # no compose at all: a preview of the file as written
            return project.model_from_file(Path(self.found.files[0])), None, None, False
        except project.ModelError as exc:
            self.output.error(exc.message)
            return NoCache(1)


def _nothing_found(compose: list[str], user_argv: list[str], env: Mapping[str, str], found: ComposeFiles,
                   settings: Settings, output: Output) -> NoCache:  # fmt: skip
    """composecache found no files: if compose cannot either, it says so itself; else say why the cache is off."""
    result = runner.safe_capture([*compose, *user_argv], env, CONFIG_TIMEOUT_S)
    if result.returncode != 0:
        return _compose_cannot_read(result, settings, output)
    output.fall_back(f"composecache could not tell which files compose reads ({found.error}); "
                     "building without the cache")  # fmt: skip
    return NoCache(1 if settings.dry_run else None, said=True)


def _compose_cannot_read(result: runner.Captured, settings: Settings, output: Output) -> NoCache:
    """Compose cannot load the project: the command fails the same way without composecache."""
    if settings.dry_run:
        output.error((result.stderr.strip() or "compose config failed").splitlines()[-1])
        return NoCache(1)
    return NoCache(None)


def self_check(user_yaml: str, ours: runner.Captured) -> str | None:
    """None when compose's model for composecache's files is the user's own; else the one line why not."""
    if ours.returncode != 0:
        reason = (ours.stderr.strip().splitlines() or ["compose config failed"])[-1]
        return (f"compose cannot read the project from the files composecache found ({reason}); "
                "building without the cache")  # fmt: skip
    if ours.stdout == user_yaml:
        return None
    try:
        theirs_data = project.load_yaml(user_yaml)
        ours_data = project.load_yaml(ours.stdout)
    except project.ModelError as exc:
        return f"could not read `compose config` output ({exc.message}); building without the cache"
    where = first_difference(theirs_data, ours_data)
    if where is None:
        return None
    return (f"the files composecache found give another project than compose's own discovery (at {where}); "
            "building without the cache")  # fmt: skip


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The dotted path of the first place two models differ (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            inner = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return inner
            found = first_difference(a[key], b[key], inner)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return path or "."
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{n}]")
            if found is not None:
                return found
        return None
    return None if a == b else (path or ".")
