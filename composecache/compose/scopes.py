"""Cache scopes for compose services: stable across sessions and projects.

<source identity>/<service> (sessions pass their own `-p`, so never the
project name); `x-composecache.scope` names the service's scope instead, and
COMPOSECACHE_SCOPE_PREFIX replaces the source identity.  On a branch other
than the default one the export goes to `<scope>@<branch>`, and imports try
that first, then the default branch's scope.
"""

from __future__ import annotations

from pathlib import Path

from composecache.cached_build import CacheRequest
from composecache.compose.project import ServiceModel, ServiceSettings
from composecache.source_identity import SourceIdentity


def source_for(identity: SourceIdentity, service: ServiceModel, project_dir: Path) -> SourceIdentity:
    """The identity a service's scope is named after.

    From git it already names the repository and the project's path inside it.  Without git
    the directory's name alone would join unrelated projects that share a name such as
    `docker`: a short digest of where the service's build context and Dockerfile sit,
    relative to the project, tells them apart and is the same in every session, wherever its
    copy of the project lives.
    """
    if identity.from_git:
        return identity
    return identity._replace(name=f"{identity.name}-{service.shape_digest(project_dir)}")


def request_for(
    service: str, settings: ServiceSettings, identity: SourceIdentity, scope_prefix: str | None
) -> CacheRequest:
    if settings.scope:
        base = f"{scope_prefix}/{settings.scope}" if scope_prefix else settings.scope
    elif scope_prefix:
        base = f"{scope_prefix}/{service}"
    else:
        base = identity.scope(service)
    if identity.branch:
        branch_scope = f"{base}@{identity.branch}"
        return CacheRequest(service, branch_scope, (branch_scope, base), settings.mode)
    return CacheRequest(service, base, (base,), settings.mode)
