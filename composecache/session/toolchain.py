"""Finds the real docker / compose / buildx tools and what they can do.

Never returns one of composecache's own shims (no recursion): the shims pass
the real binaries they wrap in COMPOSECACHE_REAL_DOCKER / COMPOSECACHE_REAL_COMPOSE,
and a PATH search skips files that carry the shim marker.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from composecache.errors import ComposecacheError
from composecache.runner import Background, Captured, capture, safe_capture

SHIM_MARKER = b"composecache-shim"
VERSION_RE = re.compile(r"v?(\d+\.\d+(?:\.\d+)?)")


def is_shim(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return SHIM_MARKER in handle.read(512)
    except OSError:
        return False


SHIM_REAL_RE = re.compile(rb"^# real: (.+)$", re.M)


def shim_target(path: Path) -> Path | None:
    """The real binary a composecache shim wraps (recorded in its header at install time)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2048)
    except OSError:
        return None
    if SHIM_MARKER not in head[:512]:
        return None
    match = SHIM_REAL_RE.search(head)
    return Path(os.fsdecode(match.group(1))) if match else None


def which_real(name: str, env: Mapping[str, str]) -> Path | None:
    """The first `name` on PATH that is not a composecache shim."""
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(directory or ".") / name
        if candidate.is_file() and os.access(candidate, os.X_OK) and not is_shim(candidate):
            return candidate
    return None


def real_docker(env: Mapping[str, str]) -> Path:
    override = env.get("COMPOSECACHE_REAL_DOCKER")
    if override:
        return Path(override)
    found = which_real("docker", env)
    if found is None:
        raise ComposecacheError("docker: command not found", hint="install the Docker CLI or put it on PATH")
    return found


def docker_config_dir(env: Mapping[str, str]) -> Path:
    """The docker CLI's configuration directory: $DOCKER_CONFIG, else ~/.docker."""
    return Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME") or Path.home()) / ".docker")


def plugin_dirs(env: Mapping[str, str]) -> list[Path]:
    """Where the docker CLI looks for plugins, in its order."""
    return [
        docker_config_dir(env) / "cli-plugins",
        Path("/usr/local/lib/docker/cli-plugins"),
        Path("/usr/local/libexec/docker/cli-plugins"),
        Path("/usr/lib/docker/cli-plugins"),
        Path("/usr/libexec/docker/cli-plugins"),
    ]


def find_plugin(name: str, env: Mapping[str, str]) -> Path | None:
    """The docker CLI plugin the CLI would run for `docker <name>` (first match wins)."""
    for directory in plugin_dirs(env):
        candidate = directory / f"docker-{name}"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def compose_command(env: Mapping[str, str]) -> list[str]:
    """argv prefix that runs the real Compose.

    `docker compose` through the real CLI, unless the compose plugin the CLI
    would pick is our shim: then the real plugin binary, run standalone (a
    Compose v2 plugin binary is also the standalone `docker-compose`).
    """
    override = env.get("COMPOSECACHE_REAL_COMPOSE")
    if override:
        return [override]
    plugin = find_plugin("compose", env)
    if plugin is not None and not is_shim(plugin):
        return [str(real_docker(env)), "compose"]
    wrapped = shim_target(plugin) if plugin is not None else None
    if wrapped is not None and wrapped.is_file():
        return [str(wrapped)]  # the real plugin our plugin shim wraps, run standalone
    standalone = which_real("docker-compose", env)
    if standalone is not None:
        return [str(standalone)]
    if plugin is None:
        return [str(real_docker(env)), "compose"]  # let docker say what is missing
    raise ComposecacheError(
        "the real Compose binary was not found behind composecache's shim",
        hint="run `composecache shim status` and reinstall the shims",
    )


class Version(tuple[int, int, int]):
    """A release number, major.minor[.patch], compared as numbers (what the tools print after `v`).

    Hand-written, not packaging.version: the tools print versions such as `2.24.0-desktop.1`, which PEP 440 rejects.
    """

    def __new__(cls, text: str) -> Version:
        parts = text.split(".")
        if not 2 <= len(parts) <= 3 or not all(part.isdigit() for part in parts):
            raise ValueError(f"not a version: {text!r}")
        major, minor, *patch = (int(part) for part in parts)
        return super().__new__(cls, (major, minor, patch[0] if patch else 0))

    @property
    def major(self) -> int:
        return self[0]

    def __str__(self) -> str:
        return ".".join(str(number) for number in self)

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"


def parse_version(text: str) -> Version | None:
    match = VERSION_RE.search(text)
    return Version(match.group(1)) if match else None


class Builder(NamedTuple):
    """What the build backend compose / buildx will use can do."""

    driver: str | None  # "docker", "docker-container", "remote", ... (None: unknown)
    containerd_store: bool | None  # for the docker driver: is the containerd image store on?
    error: str | None = None

    @property
    def can_export(self) -> bool:
        """Local cache export needs a non-`docker` driver or the containerd image store."""
        if self.driver is None:
            return True  # unknown: try; the export is ignore-error anyway
        if self.driver != "docker":
            return True
        return self.containerd_store is not False


def daemon_info(info: Captured) -> dict[str, Any] | None:
    """`docker info --format '{{json .}}'` as a dict (None: no daemon answer)."""
    if info.returncode != 0:
        return None
    try:
        parsed = json.loads(info.stdout)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _parse_builder(inspect: Captured, info: dict[str, Any] | None) -> Builder:
    # `buildx inspect` exits 0 even when the daemon is unreachable: it prints an Error: line.
    error = re.search(r"^Error:\s*(.+)$", inspect.stdout, re.M)
    if inspect.returncode != 0 or error:
        message = error.group(1) if error else inspect.stderr.strip()
        return Builder(driver=None, containerd_store=None, error=message or "buildx inspect failed")
    match = re.search(r"^Driver:[ \t]*(\S+)", inspect.stdout, re.M)
    driver = match.group(1) if match else None
    status = info.get("DriverStatus") if info is not None else None
    store = None if not isinstance(status, list) else "io.containerd.snapshotter" in json.dumps(status)
    return Builder(driver=driver, containerd_store=store)


UNKNOWN_BUILDER = Builder(driver=None, containerd_store=None)


class Toolchain(NamedTuple):
    docker: Path
    compose: list[str]
    compose_version: Version | None
    compose_version_text: str
    builder: Builder
    buildx_available: bool
    daemon_info: dict[str, Any] | None = None  # `docker info` (None: the daemon did not answer)


def probe_compose_version(compose: list[str], env: Mapping[str, str]) -> tuple[Version | None, str]:
    try:
        result = capture([*compose, "version", "--short"], env, timeout=30)
    except ComposecacheError as exc:
        return None, str(exc)
    text = (result.stdout or result.stderr).strip()
    if result.returncode != 0:
        # Compose v1 has no --short on every version; try the long form.
        try:
            result = capture([*compose, "version"], env, timeout=30)
        except ComposecacheError as exc:
            return None, str(exc)
        text = (result.stdout or result.stderr).strip()
    return parse_version(text), text.splitlines()[0] if text else ""


def probe_builder(
    docker: Path, env: Mapping[str, str], global_args: Sequence[str] = (), builder: str | None = None
) -> tuple[Builder, dict[str, Any] | None]:
    """The builder `docker [global_args] buildx build [--builder builder]` would use, and `docker info`.

    One `docker info` answers both the builder question (its DriverStatus says
    whether the containerd image store is on) and seeding's (where the
    daemon's store is): it is asked once.
    """
    prefix = [str(docker), *global_args]
    inspect = Background(safe_capture, [*prefix, "buildx", "inspect", *([builder] if builder else [])], env)
    info = daemon_info(safe_capture([*prefix, "info", "--format", "{{json .}}"], env))
    return _parse_builder(inspect.result(), info), info


def buildx_available(env: Mapping[str, str]) -> bool:
    if find_plugin("buildx", env) is not None:
        return True
    import shutil  # ~4 ms to import: only when no plugin directory has buildx

    return shutil.which("docker-buildx", path=env.get("PATH")) is not None


def probe(env: Mapping[str, str]) -> Toolchain:
    docker = real_docker(env)
    compose = compose_command(env)
    version = Background(probe_compose_version, compose, env)
    builder, info = probe_builder(docker, env)
    compose_version, text = version.result()
    return Toolchain(
        docker=docker,
        compose=compose,
        compose_version=compose_version,
        compose_version_text=text,
        builder=builder,
        buildx_available=buildx_available(env),
        daemon_info=info,
    )
