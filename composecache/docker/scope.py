"""The cache scope of one `docker build`: stable across sessions.

<source identity>/<item>, with the same rules as compose services
(composecache/compose/scopes.py): COMPOSECACHE_SCOPE_PREFIX replaces the
source identity; on a branch other than the default one the export goes to
`<scope>@<branch>` and imports try that first, then the default branch's scope.

- source identity: of the build context directory (git remote, else its
  name); of the URL for a remote context; of the current directory for `-`;
- item: the compose service for a build Compose v1 started (its tag is
  `<project>_<service>` and sessions use different projects); else the image
  repository of the first `-t` without registry and tag; else the Dockerfile's
  path within the context (`stdin` when the Dockerfile comes from stdin).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from composecache.cached_build import CacheRequest
from composecache.docker.cmdline import BuildArgs, image_repository, is_url_context
from composecache.source_identity import SourceIdentity, identify, normalize_remote

DEFAULT_MODE = "max"


def context_identity(context: str, env: Mapping[str, str], cwd: Path) -> SourceIdentity:
    if is_url_context(context):
        return SourceIdentity(name=normalize_remote(context.split("#", 1)[0]))
    if context == "-":
        return identify(cwd, env)
    path = cwd / context
    return identify(path if path.is_dir() else cwd, env)


def dockerfile_item(build: BuildArgs, cwd: Path) -> str:
    """The Dockerfile's path within the context: `Dockerfile`, `docker/api.Dockerfile`, ..."""
    if build.dockerfile == "-" or (build.context == "-" and not build.dockerfile):
        return "stdin"
    if is_url_context(build.context) or build.context == "-":
        return build.dockerfile or "Dockerfile"
    context = (cwd / build.context).resolve()
    # -f is relative to the current directory, not to the context (docker and buildx agree).
    dockerfile = (cwd / build.dockerfile).resolve() if build.dockerfile else context / "Dockerfile"
    try:
        return dockerfile.relative_to(context).as_posix()
    except ValueError:
        return dockerfile.name


def item_for(build: BuildArgs, cwd: Path, compose_v1_service: str | None = None) -> str:
    if compose_v1_service:
        return compose_v1_service
    for tag in build.tags:
        repository = image_repository(tag)
        if repository:
            return repository
    return dockerfile_item(build, cwd)


def request_for(
    build: BuildArgs,
    env: Mapping[str, str],
    scope_prefix: str | None,
    cwd: Path | None = None,
    compose_v1_service: str | None = None,
) -> CacheRequest:
    cwd = Path.cwd() if cwd is None else cwd
    item = item_for(build, cwd, compose_v1_service)
    identity = context_identity(build.context, env, cwd)
    base = f"{scope_prefix}/{item}" if scope_prefix else identity.scope(item)
    key = build.tags[0] if build.tags else item
    if identity.branch:
        branch_scope = f"{base}@{identity.branch}"
        return CacheRequest(key, branch_scope, (branch_scope, base), DEFAULT_MODE)
    return CacheRequest(key, base, (base,), DEFAULT_MODE)
