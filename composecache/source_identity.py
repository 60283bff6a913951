"""Where a build's source comes from, stable across sessions.

Sessions check the same repository out into different directories and pass
their own `-p`, so scopes are keyed on the source: the git remote URL without
credentials, scheme or `.git` suffix, plus the project's path inside the
repository (two compose projects of one monorepo never share a scope); else
the project directory's name (compose/scopes.py adds what tells unrelated
projects of one name apart).  The current branch, when it is not the default
one, gives a branch scope that imports from the default branch's scope as a
fallback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from composecache.errors import ComposecacheError
from composecache.runner import capture

SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")  # git@host:org/repo.git
DEFAULT_BRANCH_GUESSES = ("main", "master")


class SourceIdentity(NamedTuple):
    name: str  # "github.com/org/repo" or the directory name
    branch: str | None = None  # the current branch, when it is not the default branch
    from_git: bool = False  # name is the repository's (with the path inside it), not a directory name

    def scope(self, item: str) -> str:
        return f"{self.name}/{item}"


def normalize_remote(url: str) -> str:
    """`https://user:token@github.com/org/repo.git` -> `github.com/org/repo` (no credentials, ever)."""
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port and parts.scheme not in {"ssh", "git"} else ""
        path = parts.path
    else:
        match = SCP_LIKE.match(url)
        if match:
            host, port, path = match.group(1), "", match.group(2)
        else:  # a local path used as a remote
            host, port, path = "", "", url
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    return f"{host}{port}/{path}".strip("/").lower() if host else path


def _git(directory: Path, env: Mapping[str, str], *args: str) -> str | None:
    try:
        result = capture(["git", "-C", str(directory), *args], env, timeout=10)
    except ComposecacheError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def identify(directory: Path, env: Mapping[str, str]) -> SourceIdentity:
    """The source identity of `directory` (a project directory or build context)."""
    fallback = SourceIdentity(name=directory.resolve().name or "root")
    git_env = {key: value for key, value in env.items() if not key.startswith("GIT_")}
    git_env["GIT_TERMINAL_PROMPT"] = "0"
    where = _git(directory, git_env, "rev-parse", "--show-toplevel", "--show-prefix")
    if where is None:
        return fallback
    top, _, prefix = where.partition("\n")
    remotes = _git(directory, git_env, "config", "--get-regexp", r"^remote\..*\.url$") or ""
    urls = {}
    for line in remotes.splitlines():
        key, _, value = line.partition(" ")
        urls[key[len("remote.") : -len(".url")]] = value
    url = urls.get("origin") or next(iter(urls.values()), None)
    # Without a remote: the repository's directory name (as stable as a directory name can be).
    name = normalize_remote(url) if url else (Path(top).name or fallback.name)
    prefix = prefix.strip().strip("/")
    if prefix:  # the project's path inside the repository: one repository, many compose projects
        name = f"{name}/{prefix}"
    branch = _git(directory, git_env, "symbolic-ref", "-q", "--short", "HEAD")
    if not branch:
        return SourceIdentity(name=name, from_git=True)
    default = _git(directory, git_env, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD")
    default = default.split("/", 1)[1] if default and "/" in default else default
    if branch == default or (default is None and branch in DEFAULT_BRANCH_GUESSES):
        return SourceIdentity(name=name, from_git=True)
    return SourceIdentity(name=name, branch=branch, from_git=True)
