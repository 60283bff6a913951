"""What each Compose version can do with a local cache, and how we drive it.

Upstream facts (docs/design.md, Compose versions): `build.cache_to` needs 2.4.0; Compose
can build through `buildx bake` since 2.31.0 (opt-in), by default since 2.37.0,
and on that path `cache_to` was dropped until 2.37.3 (COMPOSE_BAKE=false
restores the classic builder there); v5 builds through bake only and honours
`cache_to`.  Compose v1 (Python) passes `cache_from` to `docker build` as image
names and has no `cache_to`: its builds reach the cache through the docker shim
(COMPOSE_DOCKER_CLI_BUILD=1).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from composecache.session.toolchain import Builder, Version

CACHE_TO_SINCE = Version("2.4.0")
BAKE_OPT_IN_SINCE = Version("2.31.0")
BAKE_DEFAULT_SINCE = Version("2.37.0")
BAKE_HONOURS_CACHE_TO_SINCE = Version("2.37.3")
BAKE_ONLY_SINCE = Version("5.0.0")
V2 = Version("2.0.0")


class Plan(NamedTuple):
    """How one compose run gets the cache."""

    strategy: str  # "override", "bake" or "passthrough"
    export: bool  # whether builds export to the store (else import only)
    env: Mapping[str, str] = MappingProxyType({})  # set for the compose child
    warnings: tuple[str, ...] = ()
    doctor_hints: tuple[str, ...] = ()


def plan_for(version: Version | None, builder: Builder, requested: str = "auto") -> Plan:
    """Choose the strategy for this Compose version and builder."""
    warnings: list[str] = []
    hints: list[str] = []
    env: dict[str, str] = {}
    if version is not None and version < V2:
        return Plan(
            strategy="passthrough",
            export=False,
            warnings=(f"Compose {version} (v1) cannot use a local cache directly; building without it",),
            doctor_hints=("install Compose v2, or install the shims and set COMPOSE_DOCKER_CLI_BUILD=1 "
                          "so Compose v1's `docker build` calls reach the cache",),
        )  # fmt: skip
    if version is None:
        warnings.append("could not tell the Compose version; assuming a current Compose v2")
    export = True
    if version is not None and version < CACHE_TO_SINCE:
        export = False
        warnings.append(f"Compose {version} cannot export a cache (build.cache_to needs {CACHE_TO_SINCE}): import only")
        hints.append(f"upgrade Compose to {CACHE_TO_SINCE} or newer to export")
    if version is not None and BAKE_OPT_IN_SINCE <= version < BAKE_HONOURS_CACHE_TO_SINCE and requested != "bake":
        # Its bake path silently drops cache_to: force the classic builder.
        env["COMPOSE_BAKE"] = "false"
    if not builder.can_export:
        export = False
        warnings.append(
            "this builder cannot export a local cache (docker driver with the classic image store): import only"
        )
        hints.append('turn on the containerd image store: {"features": {"containerd-snapshotter": true}} '
                     "in daemon.json, then restart dockerd")  # fmt: skip
    strategy = "bake" if requested == "bake" else "override"
    return Plan(strategy=strategy, export=export, env=env, warnings=tuple(warnings), doctor_hints=tuple(hints))
