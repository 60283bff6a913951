"""composecache's command line: its own options first, then the wrapped command.

    composecache [OPTIONS] <compose args...>     compose with the shared cache
    composecache [OPTIONS] docker <docker args>  docker build / buildx build with it
    composecache cache|shim|doctor ...           composecache's own commands

This module only parses composecache's own options and dispatches; it is also
the one error boundary that turns errors into exit codes (docs/reference.md, exit codes).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from composecache import __version__, runner
from composecache.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, ComposecacheError, UsageError
from composecache.output import Output
from composecache.settings import STRATEGIES, Settings

HELP = """\
Usage: composecache [OPTIONS] COMPOSE_ARGS...
       composecache [OPTIONS] docker build|buildx build ARGS...
       composecache cache ls|stats|verify|gc|prune ...
       composecache shim install|uninstall|status [--dir DIR]
       composecache doctor

Share one BuildKit build cache between isolated Docker daemons. Every build that
compose or docker runs imports from and exports to the shared cache directory;
everything else passes through unchanged.

Examples:
  composecache up --build -d          docker compose up --build -d, with the cache
  composecache -f a.yml -p x build    any compose global flags work as usual
  composecache --dry-run build        show what would change, run nothing
  composecache docker build -t app .  docker build with the cache
  composecache cache stats            what the shared cache holds

Options (before the compose arguments):
  --dry-run            print the diff of each service's build section and the
                       exact command; run nothing, write nothing
                       (compose's own --dry-run: composecache -- --dry-run up)
  --cache-dir PATH     the shared cache directory [env COMPOSECACHE_DIR;
                       default /buildkit-cache if it exists, else
                       $XDG_CACHE_HOME/composecache]
  --read-only          import from the cache, never export [COMPOSECACHE_READ_ONLY=1]
  --remote REG/REPO    also use the build cache in this OCI registry, shared
                       between hosts: import what this host lacks, push what
                       it builds [COMPOSECACHE_REMOTE; plain HTTP with
                       COMPOSECACHE_REMOTE_INSECURE=1]
  --strategy S         auto | override | bake (default auto: an override file
                       for compose; bake builds with `docker buildx bake --set`
                       and then runs compose with --no-build)
  -v, --verbose        say more (and show tracebacks of internal errors)
  -q, --quiet          only warnings and errors
  --version            print the version
  -h, --help           this help

Environment: COMPOSECACHE_DIR, COMPOSECACHE_DISABLE=1 (pure passthrough),
COMPOSECACHE_READ_ONLY=1, COMPOSECACHE_SCOPE_PREFIX, COMPOSECACHE_NAMESPACE,
COMPOSECACHE_REMOTE, COMPOSECACHE_REMOTE_INSECURE=1, COMPOSECACHE_REMOTE_WAIT=SECONDS
(how long a build waits for its registry push; default: as long as its export took),
COMPOSECACHE_SEED=0 (no seeding of the daemon's content store),
COMPOSECACHE_MEMO=0 (ask compose and docker every time; the session memo lives in
$COMPOSECACHE_MEMO_DIR, default ~/.cache/composecache-memo), NO_COLOR.
Exit status: the wrapped command's; 2 for usage errors, 1 for composecache's own
failures, 130 after Ctrl-C.
"""

OWN_SUBCOMMANDS = ("cache", "shim", "doctor", "docker")


# Hand-written, not typer: it runs before every build, and importing typer costs ~80 ms (measured) of a 150 ms budget.
SWITCHES = {"--dry-run": "dry_run", "--read-only": "read_only", "-q": "quiet", "--quiet": "quiet"}
VALUED = ("--cache-dir", "--strategy", "--remote")


def parse_own_options(args: list[str], settings: Settings) -> tuple[Settings, list[str], bool]:
    """Consume composecache's own leading options; return (settings, the rest, help asked)."""
    changes: dict[str, object] = {}
    verbose = 0
    i = 0
    while i < len(args):
        arg = args[i]
        name, sep, inline = arg.partition("=")
        if arg == "--":
            i += 1
            break
        if arg in {"-h", "--help"}:
            return settings, args[i + 1 :], True
        if arg in SWITCHES:
            changes[SWITCHES[arg]] = True
        elif arg == "--verbose" or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            verbose += 1 if arg.startswith("--") else len(arg) - 1
        elif name in VALUED:
            if not sep:
                if i + 1 >= len(args):
                    raise UsageError(f"{name} needs a value", hint="see composecache --help")
                i += 1
                inline = args[i]
            changes.update(_valued_option(name, inline))
        else:
            break
        i += 1
    if verbose:
        changes["verbose"] = verbose
    return settings.with_options(**changes), args[i:], False


def _valued_option(name: str, value: str) -> dict[str, object]:
    if name == "--remote":
        from composecache.remote.config import parse_remote

        parse_remote(value)  # a clear usage error now, not a warning on every build
        return {"remote": value}
    if name == "--strategy":
        if value not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {value!r}")
        return {"strategy": value}
    if not value:
        raise UsageError("--cache-dir needs a non-empty path")
    from pathlib import Path

    return {"cache_dir": Path(value)}


def _subcommand(name: str) -> Callable[[list[str], Settings, Output], int]:
    if name == "cache":
        from composecache.commands import cache

        return cache.main
    if name == "shim":
        from composecache.commands import shim

        return shim.main
    if name == "doctor":
        from composecache.commands import doctor

        return doctor.main
    from composecache.docker import build as docker_build

    return docker_build.main


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class _Call:
    """One run of composecache: its arguments, and the settings and output known so far."""

    __slots__ = ("args", "output", "settings")

    def __init__(self, args: list[str], settings: Settings, output: Output) -> None:
        self.args, self.settings, self.output = args, settings, output


def console() -> NoReturn:
    """The `composecache` command and `python -m composecache`: main(), then a fast exit.

    The interpreter's teardown of the ~150 modules a build loads costs 10-20 ms per build
    (measured, bench/overhead.py): after main() has returned there is nothing left for it to
    do, so atexit handlers run, stdout and stderr are flushed, and the process ends there.
    """
    status = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said anyway
            stream.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    """composecache's command line; also the one error boundary that turns every error into an exit code."""
    call = _Call(sys.argv[1:] if argv is None else list(argv), Settings.from_env(), Output())
    try:
        return _run(call)
    except ComposecacheError as exc:
        return _expected_error(exc, call)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `composecache ... | head`: the reader left; say nothing more, as a shell tool would
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # the boundary: an internal error must not cost the user their build
        return _internal_error(exc, call)


def _run(call: _Call) -> int:
    if call.args[:1] == ["--version"]:
        print(f"composecache {__version__}")
        return 0
    call.settings, rest, wants_help = parse_own_options(call.args, call.settings)
    call.output = Output(verbose=call.settings.verbose, quiet=call.settings.quiet)
    if wants_help or not rest:
        print(HELP, end="", file=sys.stdout if wants_help else sys.stderr)
        return 0 if wants_help else EXIT_USAGE
    consumed_separator = len(call.args) > len(rest) and call.args[len(call.args) - len(rest) - 1] == "--"
    if rest[0] in OWN_SUBCOMMANDS and not consumed_separator:
        status = _subcommand(rest[0])(rest[1:], call.settings, call.output)
    else:
        from composecache.compose import frontend

        status = frontend.run(rest, call.settings, call.output)
    if runner.foreground_seconds():  # bench/overhead.py: composecache's own time is the rest of the wall time
        call.output.debug(f"the wrapped command ran {runner.foreground_seconds() * 1000:.1f} ms")
    return status


def _expected_error(exc: ComposecacheError, call: _Call) -> int:
    if isinstance(exc, UsageError):  # one line, whichever parser found it
        call.output.error(f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
    else:
        call.output.error(exc.message, exc.hint)
    if call.settings.verbose:
        import traceback

        traceback.print_exception(exc, file=call.output.stream)
    return exc.exit_code


def _internal_error(exc: Exception, call: _Call) -> int:
    """A bug: fail open (run the command plainly) with a crash log; strict mode raises it."""
    from composecache import crashlog

    if runner.user_command_started() or not call.args or _own_subcommand(call.args, call.settings):
        # The command ran already (never twice), or it is composecache's own: nothing to fall back to.
        crashlog.fail_open(exc, call.output, "composecache failed", call.args, as_error=True)
        return 1
    crashlog.fail_open(exc, call.output, "running the command without the cache", call.args)
    return _fallback(call.args, call.settings)


def _own_subcommand(args: list[str], settings: Settings) -> bool:
    try:
        _, rest, _ = parse_own_options(args, settings)
    except UsageError:
        return False
    return bool(rest) and rest[0] in OWN_SUBCOMMANDS and rest[0] != "docker"


def _fallback(args: list[str], settings: Settings) -> int:
    """Run the wrapped command plainly after an internal error (fail open)."""
    from composecache.session import toolchain

    _, rest, _ = parse_own_options(args, settings)
    # Plainly, all the way down: a composecache shim the command starts (the docker CLI
    # runs the compose plugin shim) must not bring it back here.
    env = {**os.environ, "COMPOSECACHE_DISABLE": "1"}
    if rest[:1] == ["docker"]:
        argv = [str(toolchain.real_docker(env)), *rest[1:]]
    else:
        argv = [*toolchain.compose_command(env), *rest]
    if settings.dry_run:
        return 1
    runner.exec_replace(argv, env)
    return 127
