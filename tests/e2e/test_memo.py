"""The session memo (composecache/session/memo.py) against a real session: it saves helper commands, never a build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e import harness

PROJECT_MEMO = "unchanged since composecache last read it (memo)"
PROBE_MEMO = "unchanged since composecache last asked them (memo)"
DEFAULT_SERVICES = {"api", "worker", "web", "docs"}


def _cc(session: harness.Session, cache_dir: Path, cwd: Path, *args: str) -> harness.Result:
    env = {"COMPOSECACHE_DIR": str(cache_dir), "COMPOSECACHE_SCOPE_PREFIX": ""}
    return harness.composecache(session, "-v", "-p", "memo", *args, cwd=cwd, extra_env=env)


def _exported(log: str) -> set[str]:
    return {line.split("composecache: ", 1)[1].split(":", 1)[0] for line in log.splitlines()
            if line.startswith("composecache: ") and "; exported" in line}  # fmt: skip


@pytest.fixture
def memo_lab(sessions: harness.Sessions, tmp_path: Path, rootfs_tar: Path) -> tuple[harness.Session, Path, Path]:
    """A stable session, a copy of fixtures/stack, and the session's memo directory."""
    project = harness.copy_fixture("stack", tmp_path / "stack", rootfs_tar)
    a = sessions.start("stable")
    return a, project, Path(a.env()["COMPOSECACHE_MEMO_DIR"])


def test_the_memo_skips_the_helper_commands_and_never_a_build(
    memo_lab: tuple[harness.Session, Path, Path], cache_dir: Path
) -> None:
    a, project, memo_dir = memo_lab
    first = _cc(a, cache_dir, project, "build")
    assert PROJECT_MEMO not in first.output and PROBE_MEMO not in first.output
    assert _exported(first.output) == DEFAULT_SERVICES, first.output
    entries = sorted(path.name.split("-")[0] for path in memo_dir.iterdir())
    assert entries == ["discovery", "probe", "project"]  # discovery: the self-check's verdict
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in memo_dir.iterdir())
    assert memo_dir.stat().st_mode & 0o777 == 0o700

    second = _cc(a, cache_dir, project, "--progress", "plain", "build")
    assert PROJECT_MEMO in second.output and PROBE_MEMO in second.output, second.output
    harness.assert_all_run_steps_cached(second.output, at_least=3)
    assert _exported(second.output) == DEFAULT_SERVICES, second.output

    # Another profile is another project: compose is asked again, and the profile's service builds too.
    profiled = _cc(a, cache_dir, project, "--profile", "tools", "build")
    assert PROJECT_MEMO not in profiled.output and PROBE_MEMO in profiled.output
    assert _exported(profiled.output) == DEFAULT_SERVICES | {"tools"}, profiled.output

    # An edit to a compose file is a new key as well.
    compose = project / "compose.yaml"
    compose.write_text(compose.read_text() + "\n# an edit\n")
    edited = _cc(a, cache_dir, project, "build")
    assert PROJECT_MEMO not in edited.output and _exported(edited.output) == DEFAULT_SERVICES


def test_a_stale_memo_never_fails_a_build(memo_lab: tuple[harness.Session, Path, Path], cache_dir: Path) -> None:
    """A memo that names a service compose no longer has (a key that missed a change): compose runs again."""
    a, project, memo_dir = memo_lab
    _cc(a, cache_dir, project, "build")
    (entry,) = memo_dir.glob("project-*.json")
    data = json.loads(entry.read_text())
    data["value"]["services"]["ghost"] = {"builds": True, "extension": None, "image": None, "shape": "0" * 8}
    entry.write_text(json.dumps(data))

    run = _cc(a, cache_dir, project, "build")
    assert PROJECT_MEMO in run.output
    assert "the compose project changed in a way composecache did not notice; running compose again" in run.output
    assert _exported(run.output) == DEFAULT_SERVICES, run.output
    assert "ghost" not in json.loads(entry.read_text())["value"]["services"]  # mended for the next build
    again = _cc(a, cache_dir, project, "build")
    assert "running compose again" not in again.output and PROJECT_MEMO in again.output
