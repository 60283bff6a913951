"""composecache's small schema interpreter agrees with jsonschema on our schemas."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from composecache import validation

DIGEST = "sha256:" + "0" * 64
CASES: list[tuple[str, Any]] = [
    ("x-composecache", {}),
    ("x-composecache", {"enabled": False, "scope": "a/b", "mode": "min"}),
    ("x-composecache", {"mode": "fastest"}),
    ("x-composecache", {"enabled": "yes"}),
    ("x-composecache", {"scope": ""}),
    ("x-composecache", {"scope": "x" * 201}),
    ("x-composecache", {"unknown": 1}),
    ("x-composecache", "max"),
    ("x-composecache", None),
    ("override", {"services": {}}),
    ("override", {"services": {"a": {"build": {"cache_from": [f"type=local,src=/s,digest={DIGEST}"]}}}}),
    ("override", {"services": {"a": {"build": {"cache_to": ["type=local,dest=/d,mode=max,ignore-error=true"]}}}}),
    ("override", {"services": {"a": {"build": {"cache_to": ["type=local,dest=/d,reset=true"]}}}}),
    ("override", {"services": {"a": {"build": {"cache_from": ["type=local,src=/s"]}}}}),
    ("override", {"services": {"a": {"build": {}}}}),
    ("override", {"services": {"a": {"image": "x"}}}),
    ("override", {"services": {"a": {"build": {"cache_to": []}}}}),
    ("override", {"services": {"a": {"build": {"cache_to": ["type=local,dest=/a", "type=local,dest=/b"]}}}}),
    ("override", {}),
    ("override", []),
]


@pytest.mark.parametrize(("schema", "instance"), CASES)
def test_agrees_with_jsonschema(schema: str, instance: Any) -> None:
    reference = jsonschema.Draft202012Validator(validation.load(schema))
    assert (validation.errors(instance, schema) == []) == reference.is_valid(instance)


def test_errors_name_the_dotted_path() -> None:
    errors = validation.errors({"mode": "fastest"}, "x-composecache", prefix="services.api.x-composecache")
    assert errors == ["services.api.x-composecache.mode: 'fastest' is not one of ['max', 'min']"]


def test_schemas_are_valid_json_schemas() -> None:
    for name in ("x-composecache", "override"):
        jsonschema.Draft202012Validator.check_schema(validation.load(name))
