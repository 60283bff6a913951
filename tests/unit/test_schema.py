"""x-composecache is checked with jsonschema once per `compose config`; a remembered project keeps the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from composecache import schema
from composecache.compose import model_memo, project
from composecache.session.memo import Memo

CONFIG = """\
name: shop
services:
  api:
    build: {context: /src/api}
    x-composecache: {mode: fastest, enabled: "yes", colour: blue}
  web:
    build: {context: /src/web}
    x-composecache: {scope: shared/web}
  db:
    image: postgres
    x-composecache: {mode: fastest}
"""


def test_errors_name_the_dotted_path_and_are_all_collected() -> None:
    api = project.model_from_config_output(CONFIG).services["api"]
    settings, problems = project.service_settings(api)
    assert not settings.enabled
    assert problems == [
        "services.api.x-composecache: Additional properties are not allowed ('colour' was unexpected)",
        "services.api.x-composecache.enabled: 'yes' is not of type 'boolean'",
        "services.api.x-composecache.mode: 'fastest' is not one of ['max', 'min']",
    ]


@pytest.mark.parametrize("value", ["max", None, [], 3, {"scope": ""}, {"scope": "x" * 201}])
def test_anything_is_an_answer_never_a_crash(value: Any) -> None:
    assert schema.errors(value, "x-composecache", prefix="services.a.x-composecache")[0].startswith(
        "services.a.x-composecache"
    )


def test_a_schema_keyword_the_old_interpreter_lacked_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.schema.json").write_text('{"type": ["string", "null"], "format": "uri"}')
    monkeypatch.setattr(schema, "schema_dir", lambda: tmp_path)
    schema.load.cache_clear()
    try:
        assert schema.errors(None, "t") == [] and schema.errors(1, "t") == [
            "(top level): 1 is not of type 'string', 'null'"
        ]
    finally:
        schema.load.cache_clear()


def test_the_shipped_schemas_are_valid_json_schemas() -> None:
    for name in ("x-composecache", "override"):
        jsonschema.Draft202012Validator.check_schema(schema.load(name))


def test_only_building_services_are_checked_and_only_when_compose_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[object] = []
    real = schema.errors

    def counting(instance: object, name: str, prefix: str = "") -> list[str]:
        checked.append(instance)
        return real(instance, name, prefix)

    monkeypatch.setattr(schema, "errors", counting)
    model = project.model_from_config_output(CONFIG)
    assert len(checked) == 2, "api and web (db does not build)"
    memo = Memo(tmp_path / "memo")
    model_memo.remember(memo, "k" * 64, model, tmp_path)
    remembered = model_memo.recall(memo, "k" * 64)
    assert remembered is not None and remembered.remembered
    for name in ("api", "web"):
        assert project.service_settings(remembered.services[name]) == project.service_settings(model.services[name])
    assert len(checked) == 2, "the memo holds the verdict: no second check"
    assert project.service_settings(remembered.services["web"])[0].scope == "shared/web"
