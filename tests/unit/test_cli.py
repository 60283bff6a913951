"""composecache's command line: its own options, one usage-error style for every subcommand, the error boundary."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from composecache import cli, runner
from composecache.errors import ToolNotFound
from composecache.settings import Settings


@pytest.fixture(autouse=True)
def not_strict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Fail-open behaviour is what these tests look at; crash logs go to a private test directory."""
    monkeypatch.delenv("COMPOSECACHE_STRICT", raising=False)
    logs = tmp_path / "state" / "crash"
    monkeypatch.setenv("COMPOSECACHE_LOG_DIR", str(logs))
    return logs


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


# --- composecache's own options (the hand-written hot-path parser) ----------------------------------


def test_own_options_come_first_and_the_rest_is_compose_s() -> None:
    settings, rest, wants_help = cli.parse_own_options(
        ["--dry-run", "-vv", "--cache-dir=/c", "--strategy", "bake", "-q", "-f", "a.yml", "up"], Settings(Path("/x"))
    )
    assert (settings.dry_run, settings.verbose, settings.cache_dir, settings.strategy, settings.quiet) == (
        True, 2, Path("/c"), "bake", True)  # fmt: skip
    assert (rest, wants_help) == (["-f", "a.yml", "up"], False)


def test_double_dash_hands_everything_after_it_to_compose() -> None:
    settings, rest, _ = cli.parse_own_options(["--read-only", "--", "--dry-run", "up"], Settings(Path("/x")))
    assert settings.read_only and not settings.dry_run
    assert rest == ["--dry-run", "up"]


@pytest.mark.parametrize("args", [["--strategy", "fast", "up"], ["--cache-dir"], ["--cache-dir=", "up"]])
def test_bad_own_options_are_one_usage_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(args, capsys)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith("composecache: error: "), err


def test_no_arguments_is_the_help_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main([], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("Usage: composecache")


# --- composecache's own subcommands: typer, one usage-error style -------------------------------------


@pytest.mark.parametrize(
    ("args", "where"),
    [(["doctor", "--bogus"], "doctor"), (["cache", "--bogus"], "cache"), (["shim", "--bogus"], "shim"),
     (["shim", "install", "--bogus"], "shim install"), (["shim", "reinstall"], "shim"),
     (["cache", "gc", "--grace", "soon"], "cache gc"), (["doctor", "extra"], "doctor")],
)  # fmt: skip
def test_every_subcommand_reports_a_usage_error_in_one_line_with_exit_2(
    args: list[str], where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main(args, capsys)
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("composecache: error: ")
    assert line.endswith(f"(see composecache {where} --help)")


@pytest.mark.parametrize(
    ("command", "teaches"),
    [("doctor", "FIX"), ("cache", "composecache cache gc --keep-storage 20GB"), ("shim", "composecache shim install")],
)
def test_help_teaches(command: str, teaches: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main([command, "--help"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: composecache {command} [OPTIONS]")
    assert teaches in out


@pytest.mark.parametrize("command", ["cache", "shim"])
def test_a_command_group_alone_shows_its_help_on_stderr_with_exit_2(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main([command], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"Usage: composecache {command} [OPTIONS] COMMAND")


def test_doctor_without_docker_is_a_finding_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("COMPOSECACHE_REAL_DOCKER", raising=False)
    code, out, err = _main(["doctor"], capsys)
    assert code == 1
    assert out.startswith("FIX  docker: docker: command not found\n     -> install the Docker CLI")
    assert "Traceback" not in out + err


# --- the error boundary --------------------------------------------------------------------------------


class Bug(Exception):
    pass


@pytest.fixture
def broken_frontend(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The compose front-end raises a bug; what the boundary then runs plainly is recorded (not run)."""
    from composecache.compose import frontend

    def run(*args: object, **kwargs: object) -> int:
        raise Bug("a bug in composecache")

    ran: list[list[str]] = []
    monkeypatch.setattr(frontend, "run", run)
    monkeypatch.setattr(
        runner, "exec_replace", lambda argv, env: ran.append([*argv, f"DISABLE={env.get('COMPOSECACHE_DISABLE')}"])
    )
    monkeypatch.setattr("composecache.session.toolchain.compose_command", lambda env: ["/real/compose"])
    return ran


def test_an_internal_error_fails_open_with_a_private_crash_log_named_in_one_line(
    broken_frontend: list[list[str]], not_strict: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(["-p", "x", "build", "--build-arg", "A=1"], capsys)
    assert broken_frontend == [["/real/compose", "-p", "x", "build", "--build-arg", "A=1", "DISABLE=1"]]
    assert code == 127  # exec_replace returned: the real one never does
    (line,) = err.splitlines()
    (log,) = not_strict.iterdir()
    assert line == (f"composecache: warning: internal error (Bug('a bug in composecache')); running the command "
                    f"without the cache; crash log: {log}")  # fmt: skip
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and stat.S_IMODE(not_strict.stat().st_mode) == 0o700
    text = log.read_text()
    assert "composecache: " in text and f"python: {sys.version.split()[0]}" in text
    assert "command: composecache -p x build --build-arg A=1" in text
    assert "toolchain:\n  " in text
    assert 'raise Bug("a bug in composecache")' in text and text.rstrip().endswith("Bug: a bug in composecache")


def test_verbose_shows_the_traceback_too(broken_frontend: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = _main(["-v", "build"], capsys)
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith(
        "crash log: " + err.split("crash log: ")[-1].strip()
    )


def test_strict_mode_raises_internal_errors(
    broken_frontend: list[list[str]], not_strict: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPOSECACHE_STRICT", "1")
    with pytest.raises(Bug):
        cli.main(["build"])
    assert broken_frontend == [] and not not_strict.exists()


def test_after_the_command_ran_an_internal_error_never_runs_it_twice(
    broken_frontend: list[list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner._State, "user_command_started", True)
    code, _, err = _main(["build"], capsys)
    assert (code, broken_frontend) == (1, [])
    assert err.startswith("composecache: error: internal error (Bug('a bug in composecache')); composecache failed; "
                          "crash log: ")  # fmt: skip


def test_no_private_place_for_a_crash_log_is_said_in_the_same_line(
    broken_frontend: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # anyone may write here: never a crash log
    monkeypatch.setenv("COMPOSECACHE_LOG_DIR", str(shared))
    _, _, err = _main(["build"], capsys)
    assert err.endswith(
        f"running the command without the cache; no crash log could be written ({shared} is not a "
        "private directory of this user)\n"
    )
    assert list(shared.iterdir()) == []


# --- helper commands: a time-out is not "not found" ------------------------------------------------------


def test_safe_capture_tells_not_found_not_executable_and_timeout_apart(tmp_path: Path) -> None:
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 5\n")
    slow.chmod(0o755)
    plain = tmp_path / "plain"
    plain.write_text("not executable")
    env = {"PATH": "/usr/bin:/bin"}
    assert runner.safe_capture([str(tmp_path / "missing")], env).returncode == 127
    assert runner.safe_capture([str(plain)], env).returncode == 126
    timed_out = runner.safe_capture([str(slow)], env, timeout=0.2)
    assert timed_out.returncode == 124 and "did not answer within" in timed_out.stderr
    with pytest.raises(ToolNotFound):
        runner.capture([str(tmp_path / "missing")], env)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["cache", "ls", "--help"]])
def test_a_reader_that_goes_away_is_exit_141_and_no_warning(tmp_path: Path, args: list[str]) -> None:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "composecache", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "XDG_STATE_HOME": str(tmp_path)})  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head -0`
    status, errors = proc.wait(timeout=60), proc.stderr.read()
    # 0 when everything fit in the pipe before it closed; click's own EPIPE handling exits 1 (typer commands)
    assert status in {0, 1, 141} and errors == b"", errors
    assert not (tmp_path / "composecache").exists(), "no crash log"
