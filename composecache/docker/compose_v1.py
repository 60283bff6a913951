"""Builds that Compose v1 (docker-compose 1.x, Python) sends through the docker shim.

With COMPOSE_DOCKER_CLI_BUILD=1 (its default for `build` and `up` in 1.29)
Compose v1 runs `docker build ... --tag <project>_<service> --iidfile <tmp>
<context>` (compose/service.py, `_CLIBuilder`): no label names the service.
Sessions use different project names, so the scope must come from the
service, i.e. from the tag minus `<project>_`.  The project name is not in the
arguments; it is what Compose v1 derives from `-p`, COMPOSE_PROJECT_NAME (the
environment or the project's `.env`) or the project directory's name, so we
derive the same candidates (the parent process's arguments give `-p`, `-f`
and `--project-directory`) and take the longest one the tag starts with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from composecache.docker.cmdline import BuildArgs

# Compose v1's image name for a service without `image:` (compose/service.py image_name).
V1_TAG = re.compile(r"^[a-z0-9][-_a-z0-9]*_[A-Za-z0-9._-]+$")
VALUE_OPTIONS = {"-p": "--project-name", "-f": "--file", "--project-directory": "--project-directory",
                 "--env-file": "--env-file", "--project-name": "--project-name", "--file": "--file"}  # fmt: skip


def normalize_project(name: str) -> str:
    """Compose v1's project name rules (cli/command.py), plus the `lstrip('_-')` of image_name."""
    return re.sub(r"[^-_a-z0-9]", "", name.lower()).lstrip("_-")


def looks_like_v1_build(build: BuildArgs) -> bool:
    """Compose v1's CLI builder always passes one `--tag` and an `--iidfile`."""
    return build.iidfile is not None and len(build.tags) == 1 and V1_TAG.match(build.tags[0]) is not None


def service_from_tag(tag: str, projects: Iterable[str]) -> str | None:
    """`myproj_api` with project `myproj` -> `api`; the longest matching project wins."""
    for project in sorted({p for p in projects if p}, key=len, reverse=True):
        prefix = project + "_"
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return tag[len(prefix) :]
    return None


def parent_compose_args(ppid: int | None = None) -> list[str] | None:
    """The arguments of the Compose v1 process that started us, or None if our parent is not one."""
    pid = os.getppid() if ppid is None else ppid
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    for index, arg in enumerate(argv[:3]):  # `docker-compose ...` or `python3 /usr/bin/docker-compose ...`
        if Path(arg).name.startswith("docker-compose"):
            return argv[index + 1 :]
    return None


def _options(args: list[str]) -> dict[str, list[str]]:
    """docker-compose's global options (docopt style: `-p x`, `-px`, `--project-name=x`)."""
    found: dict[str, list[str]] = {}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        name, sep, inline = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        canonical = VALUE_OPTIONS.get(name)
        if canonical is None:
            i += 1
            continue
        if sep or inline:
            found.setdefault(canonical, []).append(inline)
            i += 1
        else:
            if i + 1 < len(args):
                found.setdefault(canonical, []).append(args[i + 1])
            i += 2
    return found


def _dotenv_project(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key.strip() == "COMPOSE_PROJECT_NAME":
            return value.strip().strip("'\"")
    return None


def project_candidates(parent_args: list[str], env: Mapping[str, str], cwd: Path) -> list[str]:
    """Every project name Compose v1 may have used, normalized."""
    options = _options(parent_args)
    names: list[str] = list(options.get("--project-name", []))
    if env.get("COMPOSE_PROJECT_NAME"):
        names.append(env["COMPOSE_PROJECT_NAME"])
    files = options.get("--file") or [f for f in env.get("COMPOSE_FILE", "").split(
        env.get("COMPOSE_PATH_SEPARATOR", os.pathsep)) if f]  # fmt: skip
    project_dirs = [Path(d) for d in options.get("--project-directory", [])]
    if files and files[0] != "-":
        project_dirs.append(Path(files[0]).parent)
    project_dirs += [cwd, *list(cwd.parents)[:4]]  # without -f, v1 finds its file upwards from cwd
    env_files = [Path(f) for f in options.get("--env-file", [])]
    for directory in project_dirs:
        full = directory if directory.is_absolute() else cwd / directory
        for dotenv in [*env_files, full / ".env"]:
            project = _dotenv_project(dotenv if dotenv.is_absolute() else cwd / dotenv)
            if project:
                names.append(project)
        names.append(full.resolve().name)
    return [normalize_project(name) for name in names]


def service_of(build: BuildArgs, env: Mapping[str, str], cwd: Path, ppid: int | None = None) -> str | None:
    """The compose service of a build Compose v1 started, or None if it is not one (or we cannot tell)."""
    if not looks_like_v1_build(build):
        return None
    parent_args = parent_compose_args(ppid)
    if parent_args is None:
        return None
    return service_from_tag(build.tags[0], project_candidates(parent_args, env, cwd))
