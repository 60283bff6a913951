"""The remembered compose project: keyed by everything `compose config` reads, holding no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from composecache.compose import model_memo
from composecache.compose.files import ComposeFiles
from composecache.compose.project import model_from_config_output
from composecache.session.memo import Memo

COMPOSE = """\
services:
  api:
    build:
      context: .
      args:
        TOKEN: ${API_TOKEN}
    x-composecache: {scope: shared/api}
  db:
    image: postgres
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    return tmp_path


def key(project: Path, env: dict[str, str] | None = None, argv: list[str] | None = None,
        env_files: list[str] | None = None) -> str | None:  # fmt: skip
    files = ComposeFiles([str(project / "compose.yaml")], project, "discovered")
    return model_memo.project_key(["/bin/true"], argv or ["config"], files, env_files or [],
                                  env if env is not None else {"API_TOKEN": "t1"}, project)  # fmt: skip


def test_the_key_is_stable(project: Path) -> None:
    assert key(project) == key(project) is not None


@pytest.mark.parametrize(
    "change",
    ["file", "interpolated variable", "compose variable", "dotenv", "argv", "env file"],
)
def test_the_key_follows_what_compose_reads(project: Path, change: str) -> None:
    before = key(project, env_files=["custom.env"])
    env, argv, env_files = {"API_TOKEN": "t1"}, ["config"], ["custom.env"]
    if change == "file":
        (project / "compose.yaml").write_text(COMPOSE.replace("postgres", "postgres:16"))
    elif change == "interpolated variable":
        env["API_TOKEN"] = "t2"
    elif change == "compose variable":
        env["COMPOSE_PROFILES"] = "debug"
    elif change == "dotenv":
        (project / ".env").write_text("API_TOKEN=t3\n")
    elif change == "argv":
        argv = ["--profile", "debug", "config"]
    elif change == "env file":
        (project / "custom.env").write_text("X=1\n")
    assert key(project, env, argv, env_files) != before


def test_variables_the_files_do_not_name_do_not_matter(project: Path) -> None:
    assert key(project, {"API_TOKEN": "t1", "TERM": "xterm", "OLDPWD": "/"}) == key(project)


@pytest.mark.parametrize(
    "extra",
    ["include:\n  - other.yaml\n", "services:\n  web:\n    extends:\n      file: base.yaml\n      service: web\n"],
)
def test_projects_that_pull_in_other_files_are_not_remembered(project: Path, extra: str) -> None:
    (project / "compose.yaml").write_text(extra if extra.startswith("include") else COMPOSE + extra[9:])
    assert key(project) is None


def test_unreadable_files_are_not_remembered(project: Path) -> None:
    (project / "compose.yaml").unlink()
    assert key(project) is None


def test_the_memo_keeps_no_build_args(project: Path, tmp_path: Path) -> None:
    config = COMPOSE.replace("${API_TOKEN}", "s3cr3t-value")
    model = model_from_config_output(config)
    memo = Memo(tmp_path / "memo")
    model_memo.remember(memo, "k" * 64, model, project)
    stored = "".join(path.read_text() for path in (tmp_path / "memo").iterdir())
    assert "s3cr3t" not in stored and "postgres" not in stored
    recalled = model_memo.recall(memo, "k" * 64)
    assert recalled is not None and recalled.remembered
    assert model_memo.building(recalled) == model_memo.building(model) == {"api": {"scope": "shared/api"}}
    assert [name for name, service in recalled.services.items() if service.builds] == ["api"]


@pytest.mark.parametrize("value", [None, [], {"services": []}, {"services": {"a": 1}}])
def test_odd_memo_values_are_misses(value: object) -> None:
    assert model_memo.from_json(value) is None
