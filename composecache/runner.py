"""Every subprocess composecache starts goes through here.

Argument lists only (never a shell), an explicit environment, the child's exit
code preserved.  `run_foreground` is how the user's real command runs: it keeps
the terminal, gets signals the way it would alone, and composecache can do
periodic work (publishing finished cache exports) while it runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Generic, NamedTuple, TypeVar

from composecache.errors import ToolError, ToolNotExecutable, ToolNotFound, ToolTimedOut

# siginfo_t.si_code values (Linux, asm-generic/siginfo.h).
SI_USER = 0  # kill(2)
SI_QUEUE = -1
SI_TKILL = -6
SENT_BY_A_PROCESS = {SI_USER, SI_QUEUE, SI_TKILL}
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# SIGCHLD is waited for too, so the child's exit is seen at once, not at the next tick.
WAITED = (*FORWARDED, signal.SIGCHLD)
KILL_AFTER_INTERRUPTS = 3


class _State:
    # Set once the user's real command has started: from then on composecache
    # must never run it a second time (the error boundary checks this before
    # falling back to a plain run after an internal error).
    user_command_started = False
    # Wall time the user's real command ran (run_foreground): composecache's own time is the rest.
    foreground_s = 0.0


T = TypeVar("T")


class Background(Generic[T]):
    """A call running in a thread; result() waits and re-raises its exception.

    (concurrent.futures would do, but importing it costs ~20 ms through logging.)
    """

    def __init__(self, function: Callable[..., T], *args: object) -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function, *args), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., T], *args: object) -> None:
        try:
            self._result = function(*args)
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class Captured(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def capture(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 60.0,
    cwd: Path | None = None,
    stdin_text: str | None = None,
    stdin_path: Path | None = None,
) -> Captured:
    """Run a helper command and capture its output (for `config`, `version`, ...).

    stdin_path: a file the child reads as its standard input (binary, not through Python).
    """
    try:
        with contextlib.ExitStack() as stack:
            stdin: int | IO[bytes] | None = None if stdin_text is not None else subprocess.DEVNULL
            if stdin_path is not None:
                stdin = stack.enter_context(open(stdin_path, "rb"))
            result = subprocess.run(
                list(argv),
                env=dict(env),
                cwd=cwd,
                input=stdin_text,
                stdin=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
    except FileNotFoundError as exc:
        raise ToolNotFound(f"{argv[0]}: command not found") from exc
    except PermissionError as exc:
        raise ToolNotExecutable(f"{argv[0]}: permission denied") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolTimedOut(f"{' '.join(argv[:3])} did not answer within {timeout:.0f}s") from exc
    return Captured(result.returncode, result.stdout, result.stderr)


def safe_capture(
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float = 30,
    *,
    stdin_text: str | None = None,
    stdin_path: Path | None = None,
) -> Captured:
    """capture(), with a command that could not run as a shell would report it, instead of an exception.

    Not found: 127; not executable: 126; no answer within `timeout`: 124 (as coreutils' timeout).
    """
    try:
        return capture(argv, env, timeout=timeout, stdin_text=stdin_text, stdin_path=stdin_path)
    except ToolError as exc:
        return Captured(exc.exit_code, "", exc.message)


def exit_code_of(returncode: int) -> int:
    """A shell's view of a child's status: killed by signal N gives 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def run_foreground(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    on_tick: Callable[[], None] | None = None,
    tick_s: float = 0.5,
    cwd: Path | None = None,
) -> int:
    """Run the user's command attached to our stdio and return its exit code.

    Signals: on a terminal the child stays in our process group (it must own
    the terminal), so a Ctrl-C typed there reaches it directly (si_code
    SI_KERNEL) and we do not send a second one (compose treats a second
    Ctrl-C as "force").  Without a terminal the child gets its own process
    group, so a signal sent to our group reaches it once, through us.  Signals
    sent with kill(2) are forwarded.  After three interrupts the child is killed.
    """
    on_terminal = _has_terminal()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)

    def restore_mask() -> None:  # runs in the child between fork and exec
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    started = time.perf_counter()
    try:
        try:
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                preexec_fn=restore_mask,
                process_group=None if on_terminal else 0,
            )
            _State.user_command_started = True
        except FileNotFoundError as exc:
            raise ToolNotFound(f"{argv[0]}: command not found") from exc
        except PermissionError as exc:
            raise ToolNotExecutable(f"{argv[0]}: permission denied") from exc
        return _wait(proc, on_tick, tick_s)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if _State.user_command_started:
            _State.foreground_s += time.perf_counter() - started


def _wait(proc: subprocess.Popen[bytes], on_tick: Callable[[], None] | None, tick_s: float) -> int:
    """Wait for the child, forwarding signals and calling on_tick every tick_s; its exit code."""
    interrupts = 0
    while True:
        info = signal.sigtimedwait(WAITED, tick_s)
        if info is not None and info.si_signo != signal.SIGCHLD:
            if info.si_signo == signal.SIGINT:
                interrupts += 1
            if interrupts >= KILL_AFTER_INTERRUPTS:
                proc.kill()
            elif info.si_code in SENT_BY_A_PROCESS and info.si_pid != proc.pid:
                _send(proc, info.si_signo)
        returncode = proc.poll()
        if returncode is not None:
            return exit_code_of(returncode)
        if on_tick is not None:
            on_tick()


def foreground_seconds() -> float:
    """How long the user's real command has run so far in this process (0.0: it did not run)."""
    return _State.foreground_s


def _has_terminal() -> bool:
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _send(proc: subprocess.Popen[bytes], signo: int) -> None:
    try:
        proc.send_signal(signo)
    except ProcessLookupError:
        pass


def user_command_started() -> bool:
    return _State.user_command_started


def exec_replace(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Become the real command (pure passthrough): no overhead, exit code and signals untouched."""
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except FileNotFoundError as exc:
        raise ToolNotFound(f"{argv[0]}: command not found") from exc
