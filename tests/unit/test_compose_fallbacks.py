"""Every path on which the compose front-end drops the cache prints exactly one line (Output.fall_back).

A fake compose on PATH answers `config` the way each branch needs; the front-end
runs in-process with compose's own run replaced by a recorder.  Each branch is
walked three ways: the one line (and compose runs as it would alone), nothing
with -q, and an exception in strict mode.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from composecache.compose import frontend
from composecache.errors import StrictFallback
from composecache.output import Output
from composecache.settings import Settings

FAKE_COMPOSE = r"""#!{python}
import os, sys
args = sys.argv[1:]
mode = os.environ.get("FAKE_MODE", "")
log = os.environ.get("FAKE_LOG")
if log:
    with open(log, "a") as handle:
        handle.write(" ".join(args) + "\n")
if args[:2] == ["version", "--short"]:
    print(os.environ.get("FAKE_VERSION", "2.40.3")); sys.exit(0)
if "config" in args:
    ours = "COMPOSE_FILE" in os.environ and os.environ.get("USER_HAS_COMPOSE_FILE") != "1"
    if mode == "ours-fails" and ours:
        print("no such file: compose.yaml", file=sys.stderr); sys.exit(1)
    if mode == "garbage":
        print("services: [unclosed"); sys.exit(0)
    image = "other" if mode == "mismatch" and ours else "app"
    ext = "\n    x-composecache:\n      mode: fastest" if mode == "bad-extension" else ""
    print("name: p\nservices:\n  app:\n    image: " + image + "\n    build:\n      context: /tmp" + ext)
    sys.exit(0)
sys.exit(0)
"""

FAKE_DOCKER = "#!/bin/sh\necho 'Error: no daemon here'\nexit 1\n"


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "compose.yaml").write_text("services:\n  app:\n    build: .\n")
    compose = _script(tmp_path / "compose", FAKE_COMPOSE.format(python=sys.executable))
    docker = _script(tmp_path / "docker", FAKE_DOCKER)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "COMPOSECACHE_REAL_COMPOSE": compose,
        "COMPOSECACHE_REAL_DOCKER": docker,
        "COMPOSECACHE_MEMO_DIR": str(tmp_path / "memo"),
        "COMPOSECACHE_DIR": str(tmp_path / "cache"),
        "COMPOSECACHE_SCOPE_PREFIX": "unit",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "PWD": str(project),
    }
    passed: list[list[str]] = []

    def passthrough(compose_argv: list[str], args: list[str], _env: object) -> int:
        passed.append(args)
        return 0

    monkeypatch.setattr(frontend, "_passthrough", passthrough)
    monkeypatch.chdir(project)
    monkeypatch.delenv("COMPOSECACHE_STRICT", raising=False)
    return {"env": env, "passed": passed, "project": project, "log": tmp_path / "calls.log"}


def _run(lab: dict[str, object], args: list[str], extra: dict[str, str], *, quiet: bool = False) -> tuple[int, str]:
    stream = io.StringIO()
    settings = Settings.from_env({"COMPOSECACHE_DIR": lab["env"]["COMPOSECACHE_DIR"]})  # type: ignore[index]
    if quiet:
        settings = settings.with_options(quiet=True)
    env = {**lab["env"], **extra}  # type: ignore[dict-item]
    status = frontend.run(args, settings, Output(quiet=quiet, stream=stream), env)
    return status, stream.getvalue()


Setup = Callable[[dict[str, object]], tuple[list[str], dict[str, str]]]


def _stdin(lab: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    return ["-f", "-", "build"], {}


def _nothing_found(lab: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    (lab["project"] / "compose.yaml").unlink()  # type: ignore[operator]
    return ["build"], {}  # the fake compose still answers: compose finds files composecache does not


def _mismatch(lab: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    return ["build"], {"FAKE_MODE": "mismatch"}


def _ours_fails(lab: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    return ["build"], {"FAKE_MODE": "ours-fails"}


def _garbage(lab: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    return ["-f", "compose.yaml", "build"], {"FAKE_MODE": "garbage"}


def _compose_v1(lab: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    return ["-f", "compose.yaml", "build"], {"FAKE_VERSION": "1.29.2"}


def _invalid_extension(lab: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    return ["-f", "compose.yaml", "build"], {"FAKE_MODE": "bad-extension"}


BRANCHES: dict[str, tuple[Setup, str]] = {
    "stdin": (_stdin, "stdin"),
    "composecache finds no files, compose does": (_nothing_found, "could not tell which files compose reads"),
    "self-check: another model": (_mismatch, "another project than compose's own discovery"),
    "self-check: compose cannot read composecache's files": (_ours_fails, "compose cannot read the project"),
    "unreadable config output": (_garbage, "could not read `compose config` output"),
    "compose v1": (_compose_v1, "v1"),
    "invalid x-composecache": (_invalid_extension, "builds without the cache"),
}


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_each_fallback_prints_exactly_one_line_and_compose_runs_alone(branch: str, lab: dict[str, object]) -> None:
    setup, expected = BRANCHES[branch]
    args, extra = setup(lab)
    status, err = _run(lab, args, extra)
    lines = [line for line in err.splitlines() if line.startswith("composecache: warning:")]
    assert len(lines) == 1, err
    assert expected in lines[0], err
    assert status == 0
    if branch == "invalid x-composecache":  # the service builds, without the cache: compose ran with no override
        assert not lab["passed"]
    else:
        assert lab["passed"] == [args]  # compose, exactly as the user called it


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_quiet_hides_the_line(branch: str, lab: dict[str, object]) -> None:
    setup, _ = BRANCHES[branch]
    args, extra = setup(lab)
    status, err = _run(lab, args, extra, quiet=True)
    assert "composecache:" not in err
    assert status == 0


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_strict_mode_raises_instead(branch: str, lab: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    setup, expected = BRANCHES[branch]
    args, extra = setup(lab)
    monkeypatch.setenv("COMPOSECACHE_STRICT", "1")
    with pytest.raises(StrictFallback, match=expected.replace("`", ".").replace("(", ".").replace(")", ".")):
        _run(lab, args, extra)


def test_a_remembered_mismatch_asks_compose_nothing_and_still_says_so(lab: dict[str, object]) -> None:
    _, first = _run(lab, ["build"], {"FAKE_MODE": "mismatch"})
    log = lab["log"]
    assert isinstance(log, Path)
    log.unlink()
    _, second = _run(lab, ["build"], {"FAKE_MODE": "mismatch"})
    assert "config" not in (log.read_text() if log.exists() else "")
    assert [line for line in second.splitlines() if "warning" in line] == [
        line for line in first.splitlines() if "warning" in line
    ]


def test_a_confirmed_discovery_is_remembered(lab: dict[str, object]) -> None:
    status, err = _run(lab, ["build"], {})
    assert status == 0 and "warning" not in err, err
    log = lab["log"]
    assert isinstance(log, Path)
    first = [line for line in log.read_text().splitlines() if "config" in line]
    assert len(first) == 2  # the user's own invocation and composecache's files, once each
    log.unlink()
    status, err = _run(lab, ["build"], {})
    assert status == 0 and "warning" not in err, err
    assert "config" not in log.read_text()  # verdict and model from the memo
