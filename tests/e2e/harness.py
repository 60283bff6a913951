"""Helpers for end-to-end tests: real session daemons, fixture contexts, build logs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import sandboxlib  # noqa: E402

Session = sandboxlib.Session
FIXTURES = REPO / "fixtures"
CORPUS = REPO.parent / "shared" / "corpus"
make_rootfs_tar = sandboxlib.make_rootfs_tar


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str, fix: str) -> NoReturn:
    """Something a test needs is not on this machine: a failure with CI=true, else a skip that says how to get it."""
    import pytest

    if in_ci():
        pytest.fail(f"CI=true and {what}: {fix}")
    pytest.skip(f"{what} ({fix})")


copy_fixture = sandboxlib.copy_fixture


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def report(self) -> str:
        """An assertion message that leads with what matters: the exit code and every line that is not
        BuildKit's progress (composecache's own lines, compose's errors), then the whole output."""
        own = [line for line in self.output.splitlines() if line.strip() and not line.startswith("#")]
        return f"exit {self.returncode}; non-progress lines:\n" + "\n".join(own[-40:]) + "\n--- output\n" + self.output


def run(
    argv: Sequence[str],
    env: dict[str, str],
    cwd: Path | None = None,
    timeout: float = 600,
    check: bool = True,
    stdin: str | None = None,
) -> Result:
    proc = subprocess.run(
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=stdin, check=False
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return result


RUN_STEP = re.compile(r"^#(\d+) \[[^\]]*\] RUN ", re.M)


def run_steps(log: str) -> dict[str, bool]:
    """Map each `RUN` step of a plain-progress BuildKit log to whether it was CACHED."""
    steps: dict[str, bool] = {}
    for match in RUN_STEP.finditer(log):
        number = match.group(1)
        line = log[match.start() : log.index("\n", match.start()) if "\n" in log[match.start() :] else len(log)]
        cached = re.search(rf"^#{number} CACHED$", log, re.M) is not None
        steps[line] = steps.get(line, False) or cached
    return steps


def assert_all_run_steps_cached(log: str, at_least: int = 1) -> None:
    steps = run_steps(log)
    assert len(steps) >= at_least, f"expected at least {at_least} RUN steps in the build log:\n{log}"
    missed = [step for step, cached in steps.items() if not cached]
    assert not missed, "RUN steps not CACHED:\n" + "\n".join(missed) + f"\n--- log\n{log}"


@dataclass
class Sessions:
    """Starts session daemons for one test and stops every one of them afterwards."""

    prefix: str
    started: list[Session] = field(default_factory=list)

    def start(self, leg: str = "stable", classic_store: bool = False) -> Session:
        name = f"{self.prefix}{len(self.started)}"
        try:
            session = sandboxlib.start(name, leg=leg, classic_store=classic_store)
        except sandboxlib.SandboxError as exc:
            missing(f"the engine cannot start ({exc})", f"run scripts/install-toolchain --leg {leg}")
        self.started.append(session)
        return session

    def stop_all(self) -> None:
        errors = []
        for session in reversed(self.started):
            try:
                sandboxlib.stop(session)
            except sandboxlib.SandboxError as exc:  # keep stopping the others
                errors.append(str(exc))
        self.started.clear()
        if errors:
            raise RuntimeError("; ".join(errors))


@contextmanager
def sessions(prefix: str) -> Iterator[Sessions]:
    group = Sessions(prefix)
    try:
        yield group
    finally:
        group.stop_all()


def docker(
    session: Session,
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
) -> Result:
    env = session.env()
    env.update(extra_env or {})
    env.setdefault("BUILDKIT_PROGRESS", "plain")
    return run([str(session.bin_dir / "docker"), *args], env, cwd=cwd, check=check, timeout=timeout)


def composecache(
    session: Session,
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
    stdin: str | None = None,
) -> Result:
    env = session.env()
    env["BUILDKIT_PROGRESS"] = "plain"
    env.update(extra_env or {})
    return run([sys.executable, "-m", "composecache", *args], env, cwd=cwd, check=check, timeout=timeout, stdin=stdin)
