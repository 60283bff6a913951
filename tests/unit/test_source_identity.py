from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from composecache.source_identity import identify, normalize_remote


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:token@github.com/Org/Repo.git", "github.com/org/repo"),
        ("https://github.com/org/repo", "github.com/org/repo"),
        ("git@github.com:org/repo.git", "github.com/org/repo"),
        ("ssh://git@gitlab.example.com:2222/group/sub/repo.git", "gitlab.example.com/group/sub/repo"),
        ("http://x:y@host:8080/a/b", "host:8080/a/b"),
    ],
)
def test_remote_urls_lose_credentials_and_scheme(url: str, expected: str) -> None:
    assert normalize_remote(url) == expected
    assert "token" not in normalize_remote(url)


def _git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_directory_name_without_git(tmp_path: Path) -> None:
    project = tmp_path / "myproj"
    project.mkdir()
    assert identify(project, dict(os.environ)).name == "myproj"


def test_git_remote_and_branch(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "remote", "add", "origin", "https://bot:s3cret@example.com/team/app.git")
    _git(tmp_path, "commit", "-q", "--allow-empty", "-m", "x")
    identity = identify(tmp_path, dict(os.environ))
    assert identity.name == "example.com/team/app" and identity.branch is None
    _git(tmp_path, "checkout", "-q", "-b", "feature/x")
    identity = identify(tmp_path, dict(os.environ))
    assert identity.branch == "feature/x"
    assert "s3cret" not in repr(identity)
