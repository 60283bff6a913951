"""--strategy bake with service names bake rewrites or would read as flags (found by tests/e2e/test_security.py)."""

from __future__ import annotations

from pathlib import Path

from composecache.cached_build import CachedBuild
from composecache.compose.bake import bake_target, set_flags
from composecache.compose.project import ProjectModel, ServiceModel
from composecache.output import Output
from composecache.settings import Settings


def test_dots_in_service_names_become_underscores_as_bake_names_its_targets() -> None:
    assert [bake_target(name) for name in ("web.v2", "..", ".", "-x", "api")] == ["web_v2", "__", "_", "-x", "api"]


def test_set_flags_address_the_bake_target_and_keep_compose_s_image_name(tmp_path: Path) -> None:
    services = {name: ServiceModel(name, {"context": "."}, None) for name in ("web.v2", "-x")}
    model = ProjectModel("p", services)
    build = CachedBuild(Settings(cache_dir=tmp_path), Output())
    flags = set_flags(model, build, ["web.v2", "-x"])
    assert flags == ["--set", "web_v2.tags=p-web.v2", "--set", "-x.tags=p--x"]
