"""Which compose files compose itself would read, and how to hand compose that list plus our override.

composecache adds its override file, and naming files switches off compose's
own discovery, so the user's files must be named explicitly, exactly as
compose finds them.  This module follows compose's own code (compose
`cmd/compose/compose.go` toProjectOptions / setEnvWithDotEnv, compose-go
`cli/options.go`), in the two generations the version matrix has:

- compose < 2.27.1 (compose-go 2.0): a first pass reads the env files
  (`--env-file`, else `COMPOSE_ENV_FILES` split on `,`, else `.env` in
  `--project-directory`, the first file's directory or the working directory)
  into the environment; then `-f`, else `COMPOSE_FILE` (split on
  `COMPOSE_PATH_SEPARATOR`, relative to the working directory), else the
  upward search from `--project-directory`/`--workdir` or the working directory.
- compose 2.27.1: the working directory's `.env` first, then as above.
- compose >= 2.27.2: the env files (`--env-file`/`COMPOSE_ENV_FILES`, else
  `.env` in the project directory or the working directory) are read before
  `COMPOSE_FILE` is looked up, so `COMPOSE_FILE` may come from them; the
  upward search; then the project directory's `.env` as well.

The upward search takes, in the first directory that has one, the first of
compose.yaml / compose.yml / docker-compose.yml / docker-compose.yaml and the
first of the four override names beside it (compose-go's own order).

Unless the user named the files with `-f` (then composecache only appends its
own), compose gets the list through `COMPOSE_FILE` with a separator of our
choosing (`invocation_env`): compose then reads the env files exactly as it
would for the user's own invocation.  What remains imitation is checked at run
time against compose itself (frontend.py, the self-check).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from composecache.session.toolchain import Version

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
# compose-go's own order (cli.DefaultOverrideFileNames): .yml before .yaml here.
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml",
                  "docker-compose.override.yaml")  # fmt: skip
LOCAL_DOTENV_FIRST = Version("2.27.1")  # setEnvWithLocalDotEnv: the working directory's .env first
ENV_FILES_BEFORE_COMPOSE_FILE = Version("2.27.2")  # toProjectOptions reads env files before COMPOSE_FILE
SHARED_DOTENV_MAP = Version("2.39.0")  # compose-go 2.8: env files parse into one map
# One compose version per discovery generation (and dotenv flavour): when all give one answer, the
# version need not be known.
SAMPLES = {"old": Version("2.26.1"), "local-dotenv": Version("2.27.1"), "current": Version("2.38.0"),
           "current-shared-dotenv": Version("2.40.3")}  # fmt: skip


class DiscoveryError(Exception):
    """Compose itself would fail to find or read its files here (it says why when it runs)."""


class ComposeFiles(NamedTuple):
    files: list[str]  # -f: as the user gave them; else absolute paths ("-": stdin)
    project_dir: Path  # where relative paths in the model resolve (compose's working dir)
    origin: str  # "-f", "COMPOSE_FILE" (environment), ".env", "discovered", "none"
    extra_env: Mapping[str, str] = MappingProxyType({})  # what compose < 2.27.1 put into its environment
    inputs: tuple[str, ...] = ()  # env files read and directories searched: what the answer depends on
    error: str | None = None  # compose would fail (files stays empty)

    @property
    def imitated(self) -> bool:
        """True when composecache found the files itself (the self-check must confirm them)."""
        return self.origin not in {"-f", "none"}


def generation(version: Version | None) -> str:
    if version is None or version >= ENV_FILES_BEFORE_COMPOSE_FILE:
        return "current"
    return "local-dotenv" if version >= LOCAL_DOTENV_FIRST else "old"


def logical_cwd(env: Mapping[str, str]) -> Path:
    """Go's os.Getwd: $PWD when it names the working directory (a symlinked path stays as typed)."""
    physical = os.getcwd()
    pwd = env.get("PWD")
    if pwd and os.path.isabs(pwd):
        try:
            if os.path.samestat(os.stat(pwd), os.stat(physical)):
                return Path(pwd)
        except OSError:
            pass
    return Path(physical)


def _abs(path: str, cwd: Path) -> str:
    """Go's filepath.Abs: joined to the working directory and cleaned lexically."""
    return os.path.normpath(os.path.join(str(cwd), path)) if path else str(cwd)


def _truthy(value: str) -> bool | None:
    """Go's strconv.ParseBool (None: not a boolean)."""
    if value in {"1", "t", "T", "TRUE", "true", "True"}:
        return True
    if value in {"0", "f", "F", "FALSE", "false", "False"}:
        return False
    return None


def _existing(directory: str, names: tuple[str, ...]) -> list[str]:
    """compose-go findFiles: os.Stat succeeds (a directory of that name counts too)."""
    return [path for path in (os.path.join(directory, name) for name in names) if os.path.exists(path)]


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class _Pass:
    """compose-go ProjectOptions while toProjectOptions runs."""

    __slots__ = ("config_paths", "cwd", "env_files", "environment", "inputs", "shared_map", "working_dir")

    def __init__(self, cwd: Path, environment: dict[str, str], working_dir: str | None, config_paths: list[str],
                 env_files: list[str], shared_map: bool, inputs: list[str]) -> None:  # fmt: skip
        self.cwd, self.environment, self.working_dir = cwd, environment, working_dir
        self.config_paths, self.env_files, self.shared_map, self.inputs = config_paths, env_files, shared_map, inputs

    def get_working_dir(self) -> str:
        if self.working_dir:
            return self.working_dir
        for path in self.config_paths:
            if path != "-":
                return os.path.dirname(_abs(path, self.cwd))
        return str(self.cwd)

    def with_config_file_env(self) -> None:
        if self.config_paths or "COMPOSE_FILE" not in self.environment:
            return
        separator = self.environment.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        paths = []
        for part in self.environment["COMPOSE_FILE"].split(separator):
            if part == "-":
                paths.append(part)
                continue
            path = _abs(part, self.cwd)
            if not os.path.exists(path):
                raise DiscoveryError(f"COMPOSE_FILE names {path}, which does not exist")
            paths.append(path)
        self.config_paths = paths

    def with_default_config_path(self) -> None:
        if self.config_paths:
            return
        directory = self.get_working_dir()
        while True:
            self.inputs.append(directory)
            found = _existing(directory, DEFAULT_FILES)
            if found:
                self.config_paths.append(found[0])
                overrides = _existing(directory, OVERRIDE_FILES)
                if overrides:
                    self.config_paths.append(overrides[0])
                return
            parent = os.path.dirname(directory)
            if parent == directory:
                return
            directory = parent

    def with_env_files(self, given: list[str], env: Mapping[str, str]) -> None:
        if given:
            self.env_files = list(given)
            return
        disabled = env.get("COMPOSE_DISABLE_ENV_FILE")
        if disabled is not None:
            flag = _truthy(disabled)
            if flag is None:
                raise DiscoveryError(f"COMPOSE_DISABLE_ENV_FILE={disabled!r} is not a boolean")
            if flag:
                return
        default = os.path.join(self.get_working_dir(), ".env")
        self.inputs.append(default)
        if os.path.exists(default) and not os.path.isdir(default):
            self.env_files = [default]

    def read_env_files(self) -> dict[str, str]:
        self.inputs.extend(self.env_files)
        if not self.env_files:
            return {}
        from composecache.compose import dotenv  # its patterns cost ~3 ms to compile: only when there is a .env

        paths = [Path(_abs(name, self.cwd)) for name in self.env_files]
        try:
            return dotenv.read_env_files(paths, self.environment, shared_map=self.shared_map)
        except dotenv.DotenvError as exc:
            raise DiscoveryError(str(exc)) from exc

    def with_dot_env(self) -> None:
        for key, value in self.read_env_files().items():
            self.environment.setdefault(key, value)


def find_files(
    cli_files: list[str],
    project_directory: str | None,
    env_files: list[str],
    env: Mapping[str, str],
    cwd: Path,
    *,
    workdir: str | None = None,
    version: Version | None = None,
) -> ComposeFiles:
    """The files compose `version` reads for these flags (`project_directory`: --project-directory)."""
    project_dir_flag = project_directory or workdir
    if cli_files:
        first = next((name for name in cli_files if name != "-"), None)
        if project_dir_flag:
            base = Path(_abs(project_dir_flag, cwd))
        elif first is not None:
            base = Path(os.path.dirname(_abs(first, cwd)))
        else:
            base = cwd
        return ComposeFiles(list(cli_files), base, "-f")
    try:
        return _discover(project_directory, workdir, env_files, env, cwd, generation(version), version)
    except DiscoveryError as exc:
        return ComposeFiles([], cwd, "none", error=str(exc))


def _discover(
    project_directory: str | None,
    workdir: str | None,
    env_files: list[str],
    env: Mapping[str, str],
    cwd: Path,
    era: str,
    version: Version | None,
) -> ComposeFiles:
    shared_map = version is None or version >= SHARED_DOTENV_MAP
    inputs: list[str] = []
    environment = dict(env)
    extra: dict[str, str] = {}
    flag_dir = project_directory or workdir
    final_dir = _abs(flag_dir, cwd) if flag_dir else None

    if era == "current":
        given = [_abs(name, cwd) for name in env_files or [p for p in env.get("COMPOSE_ENV_FILES", "").split(",") if p]]
        state = _Pass(cwd, environment, final_dir, [], [], shared_map, inputs)
        state.with_env_files(given, env)
        state.with_dot_env()
        from_os = "COMPOSE_FILE" in env
        state.with_config_file_env()
        origin = ("COMPOSE_FILE" if from_os else ".env") if state.config_paths else "discovered"
        state.with_default_config_path()
        state.with_env_files(given, env)
        state.with_dot_env()
    else:
        if era == "old":
            given = env_files or (env["COMPOSE_ENV_FILES"].split(",") if env.get("COMPOSE_ENV_FILES") else [])
            # The first pass (setEnvWithDotEnv) runs before --workdir becomes the project directory.
            first_dir = _abs(project_directory, cwd) if project_directory else None
            first = _Pass(cwd, dict(env), first_dir, [], [], shared_map, inputs)
            first.with_config_file_env()
            first.with_default_config_path()
            first.with_env_files(given, env)
            loaded_from = list(first.env_files)
            first_env = first.read_env_files()
        else:  # 2.27.1: the working directory's .env only, when no env file is given
            given = env_files or [p for p in env.get("COMPOSE_ENV_FILES", "").split(",") if p]
            loaded_from = [] if given else [os.path.join(str(cwd), ".env")]
            inputs.extend(loaded_from)
            first_env = {}
            if loaded_from and os.path.isfile(loaded_from[0]):
                state0 = _Pass(cwd, dict(env), None, [], loaded_from, shared_map, inputs)
                first_env = state0.read_env_files()
        for key, value in first_env.items():
            environment.setdefault(key, value)
        from_os = "COMPOSE_FILE" in env
        state = _Pass(cwd, environment, final_dir, [], [], shared_map, inputs)
        state.with_config_file_env()
        origin = ("COMPOSE_FILE" if from_os else ".env") if state.config_paths else "discovered"
        state.with_default_config_path()
        if era == "old" and not given and state.config_paths:
            # Given our list, compose's first pass reads the .env beside our first file (or in
            # --project-directory) instead: hand it what the user's own first pass read.
            ours = _Pass(cwd, dict(env), first_dir, list(state.config_paths), [], shared_map, [])
            ours.with_env_files(given, env)
            if loaded_from != ours.env_files:
                extra = {key: value for key, value in first_env.items() if key not in env}
    if not state.config_paths:
        return ComposeFiles([], Path(state.get_working_dir()), "none", inputs=tuple(inputs),
                            error="no configuration file provided: not found")  # fmt: skip
    return ComposeFiles(state.config_paths, Path(state.get_working_dir()), origin, extra, tuple(inputs))


def separator_for(paths: list[str]) -> str:
    """A COMPOSE_PATH_SEPARATOR that occurs in none of `paths`."""
    for candidate in (os.pathsep, ";", "|", "\x1f"):
        if not any(candidate in path for path in paths):
            return candidate
    raise DiscoveryError("no separator fits these compose file names")


def invocation(found: ComposeFiles, extra_files: list[str]) -> tuple[list[str], dict[str, str]]:
    """How compose gets the user's files plus `extra_files`: (the -f list, the variables to set).

    `-f`: the user's own list, then ours.  Otherwise COMPOSE_FILE (compose then reads its env
    files exactly as for the user's own invocation) with a separator no path contains.
    """
    if found.origin == "-f":
        return [*found.files, *extra_files], {}
    paths = [*found.files, *extra_files]
    separator = separator_for(paths)
    return [], {**found.extra_env, "COMPOSE_FILE": separator.join(paths), "COMPOSE_PATH_SEPARATOR": separator}
