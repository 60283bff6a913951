"""Install, remove and inspect the docker / docker-compose shims (returns data; never prints).

Three shims:
- `<dir>/docker`: the docker CLI wrapper;
- `<dir>/docker-compose`: the standalone Compose wrapper;
- `<plugin dir>/docker-compose`: a docker CLI plugin, so `docker compose ...`
  through the real docker CLI reaches composecache too (plugin dir: the
  docker configuration in effect, `$DOCKER_CONFIG/cli-plugins`, else
  `~/.docker/cli-plugins`).

Whatever a shim replaces is kept beside it as `.<name>.composecache-orig` (a
hard link made before the shim is renamed into place, so the name never goes
missing; the same inode, mode and mtime come back on uninstall) and the shim
execs it: an existing wrapper (the seed's docker-wrapper.sh) keeps working
behind composecache.  Files that belong to a Debian package are never
replaced.  What a shim wraps is recorded in its own header, so there is no
state file to lose; the directories an install created are recorded there too
and removed again when empty.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from composecache.errors import ComposecacheError
from composecache.runner import capture
from composecache.session import toolchain
from composecache.shim.scripts import COMPOSE, DOCKER, PLUGIN, ShimScript, parse_header, render

BACKUP_SUFFIX = ".composecache-orig"
NAMES = {DOCKER: "docker", COMPOSE: "docker-compose", PLUGIN: "docker-compose"}
TITLES = {DOCKER: "docker", COMPOSE: "docker-compose", PLUGIN: "compose plugin"}


@dataclass(frozen=True)
class Change:
    kind: str
    path: Path
    action: str  # installed | updated | unchanged | removed | restored | skipped | left
    detail: str = ""


@dataclass(frozen=True)
class ShimStatus:
    kind: str
    path: Path
    installed: bool
    real: Path | None = None
    backup: Path | None = None
    active: bool = False  # the shim is what `docker` / `docker compose` / `docker-compose` runs
    note: str = ""


def default_dir(env: Mapping[str, str]) -> Path:
    """/usr/local/bin for root (before /usr/bin on every usual PATH), else ~/.local/bin."""
    if os.geteuid() == 0:
        return Path("/usr/local/bin")
    return Path(env.get("HOME") or Path.home()) / ".local" / "bin"


def default_plugin_dir(env: Mapping[str, str]) -> Path:
    return toolchain.plugin_dirs(env)[0]


def backup_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{BACKUP_SUFFIX}")


def targets(directory: Path, plugin_dir: Path | None) -> list[tuple[str, Path]]:
    found = [(DOCKER, directory / NAMES[DOCKER]), (COMPOSE, directory / NAMES[COMPOSE])]
    if plugin_dir is not None:
        found.append((PLUGIN, plugin_dir / NAMES[PLUGIN]))
    return found


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK) and not toolchain.is_shim(path)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def find_real(name: str, directory: Path, env: Mapping[str, str], search: list[Path]) -> Path | None:
    """The binary `name` resolves to without our shim.

    In `directory` itself that is what the shim replaces, i.e. its backup (made by the install).
    """
    target = directory / name
    backup = backup_path(target)
    local = backup if any(_exists(p) and _runnable(p) for p in (backup, target)) else None
    for entry in search:
        if _same_dir(entry, directory):
            if local is not None:
                return local
            continue
        candidate = entry / name
        if _runnable(candidate):
            return candidate
    return local


def _path_dirs(env: Mapping[str, str]) -> list[Path]:
    return [Path(d or ".") for d in env.get("PATH", os.defpath).split(os.pathsep)]


def package_owner(path: Path, env: Mapping[str, str]) -> str | None:
    """The Debian package that owns `path`, if any (such files are never replaced)."""
    try:
        result = capture(["dpkg-query", "-S", str(path)], env, timeout=30)
    except ComposecacheError:
        return None  # no dpkg here
    if result.returncode != 0:
        return None
    return result.stdout.split(":", 1)[0].strip() or "a package"


def is_compose_v1(path: Path, env: Mapping[str, str]) -> bool:
    try:
        with open(path, "rb") as handle:
            first_line = handle.readline(256)
    except OSError:
        return False
    if first_line.startswith(b"#!") and b"python" in first_line:
        return True  # Debian's and pip's docker-compose 1.x
    try:
        result = capture([str(path), "version", "--short"], env, timeout=30)
    except ComposecacheError:
        return False
    version = toolchain.parse_version(result.stdout)
    return result.returncode == 0 and version is not None and version.major == 1


def _make_dirs(directory: Path) -> tuple[Path, ...]:
    """Create `directory` and missing parents; return the ones created, outermost first."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir()
    return tuple(reversed(missing))


def _write_shim(target: Path, text: str) -> None:
    """Put the shim at `target` atomically; what was there stays as the backup (a hard link)."""
    tmp = target.with_name(f".{target.name}.composecache-tmp-{os.getpid()}")
    data = text.encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o755)  # not the umask's choice
        if _exists(target) and not toolchain.is_shim(target):
            backup = backup_path(target)
            try:
                os.link(target, backup, follow_symlinks=False)
            except OSError:
                os.rename(target, backup)  # no hard links here: a moment without the name
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _check_replaceable(kind: str, target: Path, env: Mapping[str, str]) -> str | None:
    """Why `target` must not be replaced, or None."""
    if not _exists(target) or toolchain.is_shim(target):
        return None
    if _exists(backup_path(target)):
        return (f"{backup_path(target)} already exists (left by an earlier install?); "
                "move it away or run `composecache shim uninstall` first")  # fmt: skip
    owner = package_owner(target, env)
    if owner is not None:
        return f"{target} belongs to the package {owner}; install the shims into a directory earlier on PATH"
    if target.is_dir():
        return f"{target} is a directory"
    return None


def plan_scripts(
    directory: Path, plugin_dir: Path | None, env: Mapping[str, str], python: Path
) -> list[tuple[str, Path, ShimScript | None, str]]:
    """What each shim would wrap: (kind, target, script or None, why not)."""
    path_dirs = _path_dirs(env)
    docker = find_real("docker", directory, env, path_dirs)
    plans: list[tuple[str, Path, ShimScript | None, str]] = []
    if docker is None:
        raise ComposecacheError("no docker CLI found to wrap", hint="install the Docker CLI first, or put it on PATH")
    plans.append((DOCKER, directory / "docker", ShimScript(DOCKER, docker, python), ""))
    compose = find_real("docker-compose", directory, env, path_dirs)
    if compose is not None:
        script = ShimScript(COMPOSE, compose, python, compose_v1=is_compose_v1(compose, env))
    else:
        script = ShimScript(COMPOSE, None, python, docker=docker)
    plans.append((COMPOSE, directory / "docker-compose", script, ""))
    if plugin_dir is not None:
        others = [d for d in toolchain.plugin_dirs(env) if not _same_dir(d, plugin_dir)]
        plugin = find_real("docker-compose", plugin_dir, env, [plugin_dir, *others])
        target = plugin_dir / "docker-compose"
        if plugin is None:
            plans.append((PLUGIN, target, None, "no compose plugin to wrap (docker compose is not installed)"))
        else:
            plans.append((PLUGIN, target, ShimScript(PLUGIN, plugin, python), ""))
    return plans


def install(
    directory: Path, plugin_dir: Path | None, env: Mapping[str, str], python: Path | None = None
) -> list[Change]:
    """Install (or refresh) the shims; installing twice changes nothing."""
    python = Path(sys.executable) if python is None else python
    plans = plan_scripts(directory, plugin_dir, env, python)
    problems = [reason for kind, target, script, _ in plans if script is not None
                for reason in [_check_replaceable(kind, target, env)] if reason]  # fmt: skip
    if problems:
        raise ComposecacheError(problems[0], hint="nothing was changed")
    changes = []
    for kind, target, script, why_not in plans:
        if script is None:
            changes.append(Change(kind, target, "skipped", why_not))
            continue
        previous = target.read_text(errors="replace") if toolchain.is_shim(target) else None
        created = tuple(Path(p) for p in parse_header(previous).get("created", [])) if previous else ()
        created += _make_dirs(target.parent)
        text = render(ShimScript(script.kind, script.real, script.python, script.docker, script.compose_v1,
                                 created))  # fmt: skip
        detail = f"-> {script.real or f'{script.docker} compose'}" + (" (Compose v1)" if script.compose_v1 else "")
        moved = _exists(target) and previous is None
        if previous == text:
            changes.append(Change(kind, target, "unchanged", detail))
            continue
        _write_shim(target, text)
        action = "updated" if previous is not None else "installed"
        changes.append(Change(kind, target, action, detail + (" (what was here, kept beside it)" if moved else "")))
    return changes


def uninstall(directory: Path, plugin_dir: Path | None) -> list[Change]:
    """Remove our shims and put back exactly what each replaced; leave anything else alone."""
    changes = []
    created: list[Path] = []
    for kind, target in targets(directory, plugin_dir):
        backup = backup_path(target)
        if _exists(target) and toolchain.is_shim(target):
            created += [Path(p) for p in parse_header(target.read_text(errors="replace")).get("created", [])]
            if _exists(backup):
                os.rename(backup, target)
                changes.append(Change(kind, target, "restored", f"from {backup}"))
            else:
                target.unlink()
                changes.append(Change(kind, target, "removed"))
        elif _exists(backup) and not _exists(target):
            os.rename(backup, target)
            changes.append(Change(kind, target, "restored", f"from {backup}"))
        elif _exists(backup):
            changes.append(Change(kind, target, "left", f"{target} is not a composecache shim any more; "
                                                        f"the file it replaced is still at {backup}"))  # fmt: skip
    for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()  # only when empty
    return changes


def status(directory: Path, plugin_dir: Path | None, env: Mapping[str, str]) -> list[ShimStatus]:
    found = []
    for kind, target in targets(directory, plugin_dir):
        backup = backup_path(target)
        installed = _exists(target) and toolchain.is_shim(target)
        if not installed:
            note = "not installed" + (f" ({target} is something else)" if _exists(target) else "")
            found.append(ShimStatus(kind, target, False, backup=backup if _exists(backup) else None, note=note))
            continue
        real = toolchain.shim_target(target)
        fields = parse_header(target.read_text(errors="replace"))
        winner = _what_runs(kind, env)
        active = winner is not None and _same_file(winner, target)
        notes = []
        if real is not None and not _exists(real):
            notes.append(f"the real binary {real} is gone: reinstall")
        if real is None and fields.get("docker"):
            notes.append(f"no standalone docker-compose: runs `{fields['docker'][0]} compose`")
        python = Path(fields.get("python", [""])[0])
        if not python.is_file():
            notes.append(f"python {python} is gone: reinstall")
        if not active:
            notes.append(f"not in effect: {winner} runs instead" if winner else "not in effect (not on PATH)")
        found.append(ShimStatus(kind, target, True, real, backup if _exists(backup) else None, active,
                                "; ".join(notes)))  # fmt: skip
    return found


def _what_runs(kind: str, env: Mapping[str, str]) -> Path | None:
    if kind == PLUGIN:
        return toolchain.find_plugin("compose", env)
    for entry in _path_dirs(env):
        candidate = entry / NAMES[kind]
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def doctor_findings(env: Mapping[str, str]) -> list[tuple[bool, str, str | None]]:
    """For `composecache doctor`: which shims are in effect and whether they still work."""
    findings: list[tuple[bool, str, str | None]] = []
    for kind in (DOCKER, COMPOSE, PLUGIN):
        path = _what_runs(kind, env)
        if path is None or not toolchain.is_shim(path):
            if kind == DOCKER:
                findings.append((True, "shims: not installed (`composecache shim install` wires every docker and "
                                       "compose build of a session into the cache)", None))  # fmt: skip
                return findings
            continue
        fields = parse_header(path.read_text(errors="replace"))
        real = toolchain.shim_target(path)
        python = Path(fields.get("python", [""])[0])
        broken = [str(p) for p in (real, python) if p is not None and not p.is_file()]
        findings.append((not broken, f"shim: {TITLES[kind]} {path} -> {real or 'docker compose'}"
                                     + (f" (missing: {', '.join(broken)})" if broken else ""),
                         "run `composecache shim install` again" if broken else None))  # fmt: skip
    return findings
