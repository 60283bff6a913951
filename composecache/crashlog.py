"""Crash logs: what an internal error leaves behind for a bug report (as pre-commit's error_handler does).

cli.py's boundary fails open on an unexpected exception and names the file it
wrote here in its one warning line.  The file holds the version, the Python and
toolchain versions, the command line and the traceback.  The command line may
hold secrets (`--build-arg TOKEN=...`), so the logs live in a private
directory of the user's own (0700; files 0600), never in the shared cache:
$COMPOSECACHE_LOG_DIR, else $XDG_STATE_HOME/composecache/crash (default
~/.local/state/composecache/crash).  At most MAX_LOGS are kept.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from composecache import __version__, runner
from composecache.errors import ComposecacheError, strict_mode
from composecache.output import Output

LOG_DIR_ENV = "COMPOSECACHE_LOG_DIR"
MAX_LOGS = 20
VERSION_TIMEOUT_S = 5.0
PREFIX = "crash-"


def log_dir(env: Mapping[str, str]) -> Path | None:
    explicit = env.get(LOG_DIR_ENV)
    if explicit:
        return Path(explicit)
    state = env.get("XDG_STATE_HOME") or (str(Path(env["HOME"]) / ".local" / "state") if env.get("HOME") else "")
    return Path(state) / "composecache" / "crash" if state and os.path.isabs(state) else None


def fail_open(
    exc: Exception, output: Output, message: str, argv: Sequence[str] | None = None, *, as_error: bool = False
) -> Path | None:
    """Report an internal error (a bug) that the caller then deals with; the crash log's path.

    COMPOSECACHE_STRICT=1: re-raised (tests must not pass on the fail-open path).  Else: a
    crash log, the traceback with -v, and one line (a warning, or an error) naming the log:
    `internal error (<exc>); <message>; crash log: <path>`.
    """
    if strict_mode():
        raise exc
    log = write(exc, sys.argv[1:] if argv is None else argv)
    if output.verbose:
        traceback.print_exception(exc, file=output.stream)
    where = f"crash log: {log}" if isinstance(log, Path) else f"no crash log could be written ({log})"
    (output.error if as_error else output.warn)(f"internal error ({exc!r}); {message}; {where}")
    return log if isinstance(log, Path) else None


def write(exc: BaseException, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Path | str:
    """Write a crash log for `exc`: its path, or why it could not be written. Never raises."""
    env = os.environ if env is None else env
    try:
        directory = log_dir(env)
        if directory is None:
            return f"no HOME, XDG_STATE_HOME or {LOG_DIR_ENV}"
        if not _private_dir(directory):
            return f"{directory} is not a private directory of this user"
        text = report(exc, argv, env)
        path = directory / f"{PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(text)
        _prune(directory)
        return path
    except Exception as problem:  # a crash log must never hide the error it is about: the line says why there is none
        return f"{problem!r}"


def report(exc: BaseException, argv: Sequence[str], env: Mapping[str, str]) -> str:
    import shlex

    lines = [
        "### composecache crash log",
        f"composecache: {__version__}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"platform: {sys.platform}, uid {os.geteuid()}",
        f"command: composecache {shlex.join(argv)}",
        f"directory: {os.getcwd()}",
        "environment: " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if _shown(k)),
        "toolchain:",
        *(f"  {line}" for line in toolchain_versions(env)),
        "traceback:",
        *("".join(traceback.format_exception(exc)).rstrip().splitlines()),
        "",
    ]
    return "\n".join(lines)


def toolchain_versions(env: Mapping[str, str]) -> list[str]:
    """One line per tool: what its version command printed, or why there is none."""
    from composecache.session import toolchain

    try:
        docker = str(toolchain.real_docker(env))
        compose = toolchain.compose_command(env)
    except ComposecacheError as exc:
        return [f"(not found: {exc.message})"]
    commands = {"docker": [docker, "--version"], "compose": [*compose, "version", "--short"],
                "buildx": [docker, "buildx", "version"]}  # fmt: skip
    lines = []
    for name, argv in commands.items():
        result = runner.safe_capture(argv, env, VERSION_TIMEOUT_S)
        answer = (result.stdout or result.stderr).strip().splitlines()
        status = f" (exit {result.returncode})" if result.returncode else ""
        lines.append(f"{name}: {answer[0] if answer else '?'}{status}")
    return lines


def _shown(name: str) -> bool:
    """composecache's and compose's settings; DOCKER_* too, but no credentials."""
    return name.startswith(("COMPOSECACHE_", "COMPOSE_", "DOCKER_", "BUILDX_", "BUILDKIT_")) and not any(
        word in name for word in ("AUTH", "PASS", "TOKEN", "SECRET")
    )


def _private_dir(directory: Path) -> bool:
    """Ours alone: create it 0700, or accept an existing directory we own that nobody else may write."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, mode=0o700)
    info = os.lstat(directory)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077


def _prune(directory: Path) -> None:
    logs = sorted(entry for entry in os.listdir(directory) if entry.startswith(PREFIX))
    for name in logs[: max(0, len(logs) - MAX_LOGS)]:
        with contextlib.suppress(OSError):
            os.unlink(directory / name)
