"""How composecache's own subcommands (cache, shim, doctor) run: typer apps with one error style.

typer parses and prints `--help`; every error comes back to composecache's
boundary instead of typer's own display: a usage error is one line and exit 2
(`composecache: error: No such option: --bogus (see composecache doctor --help)`),
a ComposecacheError goes to cli.py's boundary like any other.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import typer

from composecache.errors import EXIT_USAGE, ComposecacheError, UsageError
from composecache.output import Output
from composecache.settings import Settings

# What every app shares: no shell-completion options, no rich tracebacks (cli.py's boundary shows them).
APP_OPTIONS = {"add_completion": False, "pretty_exceptions_enable": False, "rich_markup_mode": None}


@dataclass
class CommandState:
    """What cli.py hands a subcommand: the settings and where its messages go (typer's ctx.obj)."""

    settings: Settings
    output: Output


def state_of(ctx: typer.Context) -> CommandState:
    state = ctx.find_object(CommandState)
    if state is None:  # run on its own (python -m composecache.commands.cache): from the environment
        state = CommandState(Settings.from_env(), Output())
        ctx.obj = state
    return state


def run(app: typer.Typer, name: str, args: Sequence[str], state: CommandState) -> int:
    """Run `composecache NAME ARGS...` through `app`; the exit code (usage errors raise UsageError: exit 2)."""
    command = typer.main.get_command(app)
    prog_name = f"composecache {name}"
    if not args and app.info.no_args_is_help:  # a group alone: its help, as a usage error (stderr, exit 2)
        with contextlib.redirect_stdout(sys.stderr):
            command.main(args=["--help"], prog_name=prog_name, standalone_mode=False, obj=state)
        return EXIT_USAGE
    try:
        result = command.main(args=list(args), prog_name=prog_name, standalone_mode=False, obj=state)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        raise KeyboardInterrupt from None
    except typer.TyperException as exc:  # click's UsageError, BadParameter, NoSuchOption, ...
        if exc.exit_code == EXIT_USAGE:
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or prog_name
            raise UsageError(exc.format_message(), hint=f"see {where} --help") from None
        raise ComposecacheError(exc.format_message()) from None
    return result if isinstance(result, int) else 0
