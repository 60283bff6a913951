"""composecache's settings: its own command-line options over the environment (docs/reference.md, environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_SHARED_DIR = Path("/buildkit-cache")
DEFAULT_NAMESPACE = "default"
STRATEGIES = ("auto", "override", "bake")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _seconds(value: str | None) -> float | None:
    """A number of seconds from the environment; None when unset or not a number >= 0 (then the default)."""
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


def default_cache_dir(env: Mapping[str, str]) -> Path:
    if DEFAULT_SHARED_DIR.is_dir():
        return DEFAULT_SHARED_DIR
    xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(xdg) / "composecache"


class Settings(NamedTuple):
    cache_dir: Path
    disabled: bool = False
    read_only: bool = False
    scope_prefix: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    strategy: str = "auto"
    dry_run: bool = False
    verbose: int = 0
    quiet: bool = False
    remote: str | None = None  # REGISTRY/REPOSITORY of the shared registry tier (composecache/remote/)
    remote_insecure: bool = False  # plain HTTP / unchecked TLS to it, for BuildKit too
    remote_wait_s: float | None = None  # how long a build waits for its registry push (None: the export's time)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        cache_dir = env.get("COMPOSECACHE_DIR")
        return cls(
            cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(env),
            disabled=_truthy(env.get("COMPOSECACHE_DISABLE")),
            read_only=_truthy(env.get("COMPOSECACHE_READ_ONLY")),
            scope_prefix=env.get("COMPOSECACHE_SCOPE_PREFIX") or None,
            namespace=env.get("COMPOSECACHE_NAMESPACE") or DEFAULT_NAMESPACE,
            remote=env.get("COMPOSECACHE_REMOTE") or None,
            remote_insecure=_truthy(env.get("COMPOSECACHE_REMOTE_INSECURE")),
            remote_wait_s=_seconds(env.get("COMPOSECACHE_REMOTE_WAIT")),
        )

    def with_options(self, **changes: Any) -> Settings:
        return self._replace(**changes)
