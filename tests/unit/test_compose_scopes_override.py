from __future__ import annotations

from composecache import schema
from composecache.cached_build import CacheRequest, CacheSlot
from composecache.compose import dryrun, override, scopes
from composecache.compose.project import ServiceSettings
from composecache.source_identity import SourceIdentity

DIGEST = "sha256:" + "a" * 64


def test_scope_is_source_plus_service_never_the_project_name() -> None:
    request = scopes.request_for("api", ServiceSettings(), SourceIdentity("github.com/org/app"), None)
    assert request == CacheRequest("api", "github.com/org/app/api", ("github.com/org/app/api",), "max")


def test_prefix_and_extension_scope_override() -> None:
    identity = SourceIdentity("github.com/org/app")
    assert scopes.request_for("api", ServiceSettings(), identity, "team").export_scope == "team/api"
    custom = ServiceSettings(scope="shared-base", mode="min")
    request = scopes.request_for("api", custom, identity, None)
    assert (request.export_scope, request.mode) == ("shared-base", "min")
    assert scopes.request_for("api", custom, identity, "team").export_scope == "team/shared-base"


def test_branch_exports_to_its_scope_and_imports_the_default_branch_after_it() -> None:
    request = scopes.request_for("api", ServiceSettings(), SourceIdentity("h/o/r", branch="feat/x"), None)
    assert request.export_scope == "h/o/r/api@feat/x"
    assert request.import_scopes == ("h/o/r/api@feat/x", "h/o/r/api")


def _slot(cache_from: list[str], cache_to: str | None) -> CacheSlot:
    return CacheSlot(CacheRequest("x", "s", ("s",)), cache_from=cache_from, cache_to=cache_to)


def test_override_document_validates_and_skips_services_without_cache() -> None:
    slots = {
        "api": _slot(
            [f"type=local,src=/c/scopes/api,digest={DIGEST}"], "type=local,dest=/c/staging/a,mode=max,ignore-error=true"
        ),
        "web": _slot([], "type=local,dest=/c/staging/w,mode=min,ignore-error=true"),
        "off": _slot([], None),
    }
    document = override.override_document(slots)
    assert set(document["services"]) == {"api", "web"}
    assert "cache_from" not in document["services"]["web"]["build"]
    assert schema.errors(document, "override") == []  # checked here, not on every build


def test_schema_rejects_reset_and_unpinned_imports() -> None:
    bad = {
        "services": {
            "a": {"build": {"cache_to": ["type=local,dest=/x,reset=true"], "cache_from": ["type=local,src=/x"]}}
        }
    }
    errors = schema.errors(bad, "override")
    assert len(errors) == 2 and all(error.startswith("services.a.build.cache_") for error in errors)


def test_dry_run_diff_appends_to_the_users_lists() -> None:
    before = {"context": "/p", "cache_from": ["type=local,src=/own"]}
    after = dryrun.effective_build(before, {"cache_from": ["ours"], "cache_to": ["dest"]})
    assert after["cache_from"] == ["type=local,src=/own", "ours"]
    diff = dryrun.service_diff("api", before, after)
    assert "+  - ours" in diff and "   - type=local,src=/own" in diff


def test_dollar_in_a_cache_path_is_escaped_for_compose_interpolation() -> None:
    document = override.override_document({"a": _slot([], "type=local,dest=/c/$HOME/x,mode=max")})
    assert document["services"]["a"]["build"]["cache_to"] == ["type=local,dest=/c/$$HOME/x,mode=max"]
