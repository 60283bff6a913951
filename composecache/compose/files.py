"""Which compose files compose itself would read.

composecache adds its override with `-f`, and any `-f` switches off compose's
own discovery, so the user's files must be passed explicitly, in compose's own
order: `-f` flags; else COMPOSE_FILE (environment, then the project's `.env`);
else the first of compose.yaml / compose.yml / docker-compose.yml /
docker-compose.yaml in the working directory or its nearest parent, plus the
matching override file beside it.  This is discovery only: merging stays
compose's job (we pass the list, compose merges it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
# compose-go's own order (cli.DefaultOverrideFileNames): .yml before .yaml here.
OVERRIDE_FILES = ("compose.override.yml", "compose.override.yaml", "docker-compose.override.yml",
                  "docker-compose.override.yaml")  # fmt: skip


@dataclass(frozen=True)
class ComposeFiles:
    files: list[str]  # as compose should get them with -f (may be relative to cwd, or "-")
    project_dir: Path  # where relative paths in the model resolve (compose's working dir)
    origin: str  # "-f", "COMPOSE_FILE", "discovered", "none"


def _dotenv_value(path: Path, key: str) -> str | None:
    """A plain KEY=value from a .env file (compose's own dotenv syntax, simple cases)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            return value
    return None


def find_files(  # noqa: C901
    cli_files: list[str],
    project_directory: str | None,
    env_files: list[str],
    env: Mapping[str, str],
    cwd: Path,
) -> ComposeFiles:
    workdir = (cwd / project_directory).resolve() if project_directory else cwd
    if cli_files:
        first = cli_files[0]
        base = workdir if project_directory or first == "-" else (cwd / first).resolve().parent
        return ComposeFiles(list(cli_files), base, "-f")

    compose_file = env.get("COMPOSE_FILE")
    separator = env.get("COMPOSE_PATH_SEPARATOR")
    if not compose_file:
        dotenvs = [cwd / path for path in env_files] if env_files else [workdir / ".env"]
        for dotenv in dotenvs:
            compose_file = _dotenv_value(dotenv, "COMPOSE_FILE") or compose_file
            separator = _dotenv_value(dotenv, "COMPOSE_PATH_SEPARATOR") or separator
    if compose_file:
        parts = [part for part in compose_file.split(separator or os.pathsep) if part]
        files = [str(workdir / part) if not os.path.isabs(part) else part for part in parts]
        base = workdir if project_directory else Path(files[0]).resolve().parent
        return ComposeFiles(files, base, "COMPOSE_FILE")

    directory = workdir
    while True:
        for name in DEFAULT_FILES:
            candidate = directory / name
            if candidate.is_file():
                files = [str(candidate)]
                for override in OVERRIDE_FILES:
                    if (directory / override).is_file():
                        files.append(str(directory / override))
                        break
                return ComposeFiles(files, workdir if project_directory else directory, "discovered")
        if directory.parent == directory:
            return ComposeFiles([], workdir, "none")
        directory = directory.parent
