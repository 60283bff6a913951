"""What `doctor` and `cache stats` say about the registry tier: its configuration and a live check.

The check is what a build relies on: /v2/ answers (with the docker config's
credentials), and a blob upload can start (then it is cancelled: nothing is
written).  A registry serving read-only (distribution's maintenance mode,
during its gc) or a pull-only token is reported as read-only: builds import
from it and push nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from composecache.errors import UsageError
from composecache.remote import credentials
from composecache.remote.client import DENIED, RegistryClient, RemoteError
from composecache.remote.config import Remote, parse_remote
from composecache.remote.naming import scope_tag
from composecache.settings import Settings

READABLE = "readable"


@dataclass(frozen=True)
class RemoteCheck:
    remote: Remote | None
    reachable: bool
    writable: bool
    detail: str  # one line, no credentials

    @property
    def status(self) -> str:
        if not self.reachable:
            return "unreachable"
        return "read-write" if self.writable else "read-only"


def configured(settings: Settings) -> Remote | None:
    """The configured remote (None: none); UsageError when the setting is not a remote."""
    if not settings.remote:
        return None
    return parse_remote(settings.remote, insecure=settings.remote_insecure)


def check(remote: Remote, env: Mapping[str, str]) -> RemoteCheck:
    try:
        found = credentials.lookup(remote.registry, env)
    except credentials.CredentialsError as exc:
        return RemoteCheck(remote, False, False, str(exc))
    who = f"credentials from the {found.source}" if found else "anonymous"
    client = RegistryClient(remote, found)
    try:
        client.ping()
    except RemoteError as exc:
        return RemoteCheck(remote, False, False, exc.message)
    try:
        client.try_upload()
    except RemoteError as exc:
        if exc.kind in {DENIED, "auth"}:
            return RemoteCheck(remote, True, False, f"{who}; pushing is refused: {exc.message}")
        return RemoteCheck(remote, True, False, f"{who}; cannot start an upload: {exc.message}")
    return RemoteCheck(remote, True, True, f"{who}; pushing works (a test upload was started and cancelled)")


def stats_json(settings: Settings, scope_names: Iterable[str]) -> dict[str, Any] | None:
    """The `remote` entry of `cache stats --json`: what is configured and each scope's tag (no request)."""
    try:
        remote = configured(settings)
    except UsageError as exc:
        return {"error": exc.message}
    if remote is None:
        return None
    return {
        "name": remote.name,
        "registry": remote.registry,
        "repository": remote.repository,
        "plain_http": remote.scheme == "http",
        "insecure": remote.insecure,
        "tags": {name: scope_tag(name, settings.namespace) for name in scope_names},
    }
